"""The run contract: one typed, torch-free description of a run, from the API to the trainer.

The service stores one :class:`RunSpec` per run row (JSON); the job driver validates it
back with ``RunSpec.model_validate``. The experiment spec (``service.spec``) composes the
same option models and adds only what spans runs (the grid, the name). Nothing about a run
travels as loose dict keys or extra environment variables.

Importable without torch and Ray: the API validates specs with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from models.catalog import ARCHITECTURES, DEFAULT_RD_LAMBDA, PRESETS, Recipe, size_problem
from models.datasets import DatasetInfo, dataset_info, dataset_names, known_dataset_info
from models.plan import Precision, Schedule
from models.plugins import PluginUnavailable
from models.registry import NAME_PATTERN

# A variant's name (a preset, a plugin's or a composed recipe's): what a run is labelled
# by. Which names exist is the catalog's (and the stored runs') business, not the form's.
VariantName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
# A name a filter may give: the catalog's, or one stored runs carry (a composed recipe's, an
# uninstalled plugin's dataset); the route checks which against the database.
StoredName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


def known_dataset(name: str) -> str:
    """``name`` if it names a dataset here (built-in or an available plugin's)."""
    try:
        dataset_info(name)
    except (KeyError, PluginUnavailable) as exc:
        raise ValueError(exc.args[0]) from None
    return name


class EnumOf:
    """A string's JSON schema as an enum of ``names()`` when the schema is made (the
    registries may grow plugins after import)."""

    def __init__(self, names: Callable[[], list[str]]) -> None:
        self.names = names

    def __get_pydantic_json_schema__(self, core_schema: object, handler: object
                                     ) -> dict[str, object]:
        return {"type": "string", "enum": self.names()}


# A dataset a spec (or a filter) names: checked against the dataset registry.
DatasetName = Annotated[str, AfterValidator(known_dataset), EnumOf(dataset_names)]
# The LR-search registry (workers.lr_search.METHODS) has exactly these names; a test
# checks that the two agree.
LrMethodName = Literal["tune", "range_test", "fixed"]
Validation = Literal["holdout", "test"]
ClassifierArch = Literal["resnet34", "small"]
QuantBits = Literal[4, 6, 8, 16]
CodecName = Literal["jpeg", "webp", "avif"]
# The architectures a rate + λ·distortion loss can train (a learned entropy model), in words.
RATE_ARCHITECTURES = ", ".join(n for n, a in ARCHITECTURES.items() if a.entropy_model)
DEFAULT_CODECS: tuple[CodecName, ...] = ("jpeg", "webp")

DEFAULT_LR = 1e-3  # the `fixed` method's LR where the study picked none for the dataset


MAX_SEED = 2**32 - 1  # numpy's and torch's generators take seeds in [0, 2**32)


class _Strict(BaseModel):
    # Unknown fields and non-finite numbers (NaN, Infinity) are refused, naming the field.
    # Numbers written as strings ("7", "1e-3") are read as numbers on purpose (pydantic's lax
    # mode, FastAPI's default): PyYAML reads `lr: 1e-3` in a YAML spec as a string.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LrSearch(_Strict):
    method: LrMethodName = Field(
        default="tune", description="tune: Ray Tune + ASHA over [min_lr, max_lr] from the end "
        "of phase 1; range_test: the study's LR range test from the end of phase 1; fixed: "
        "use lr (default: the study's hand-picked one)")
    num_samples: int = Field(default=8, ge=1, le=64, description="Tune trials per run")
    min_lr: float = Field(default=1e-5, gt=0, lt=10)
    max_lr: float = Field(default=1e-1, gt=0, le=10)
    budget_epochs: int = Field(default=2, ge=1, le=20,
                               description="phase-2 epochs per Tune trial (at most phase 2)")
    range_test_steps: int = Field(default=100, ge=10, le=1000)
    lr: float | None = Field(default=None, gt=0, le=10, description="for method=fixed")

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.min_lr >= self.max_lr:
            raise ValueError("min_lr must be below max_lr")
        return self


class DataOptions(_Strict):
    train_limit: int | None = Field(default=None, ge=16, description="cap on training images")
    test_limit: int | None = Field(default=None, ge=1, description="first N test images")
    validation: Validation = Field(
        default="holdout", description="holdout: 10% of train; test: the study's way")
    augment: bool = True
    crop: int = Field(
        default=32, ge=8, le=512, description="the model's input side in px (the study's "
        "32). Images larger than it (or of differing sizes) train on random crops and are "
        "evaluated whole, as tiles of it (padding never counted); smaller ones (MNIST's "
        "28) are served resized to it, as the study did. Each architecture takes multiples "
        "of its stride (GET /catalog: crop_stride)")


class Resources(_Strict):
    gpus_per_run: float = Field(default=1.0, ge=0, le=8, description="fractional allowed")
    cpus_per_run: float = Field(default=1.0, gt=0, le=64,
                                description="CPUs per trial; also torch's thread count")

    @property
    def threads(self) -> int:
        """torch intra-op threads for this run's training, the same on every path."""
        return max(1, int(self.cpus_per_run))


class ClassifierBudget(_Strict):
    enabled: bool = True
    arch: ClassifierArch = "resnet34"
    frozen_epochs: int = Field(default=11, ge=0, le=100)
    unfrozen_epochs: int = Field(default=10, ge=0, le=100)
    pretrained: bool = True

    @model_validator(mode="after")
    def _weights_exist(self) -> Self:
        if self.arch == "small" and self.pretrained:
            raise ValueError("the small classifier has no ImageNet weights: set "
                             "classifier.pretrained to false")
        return self


def data_limit_problems(data: DataOptions, info: DatasetInfo, batch_size: int
                        ) -> list[tuple[tuple[str, ...], str]]:
    """What is wrong with ``data``'s limits and ``batch_size`` for the dataset ``info``
    describes: (field path, message) pairs, each message naming the dataset and the
    split's image count.

    Limits are refused rather than clamped, so a run never trains on less than its spec
    says: ``train_limit`` at most the dataset's capacity (``DatasetInfo.capacity``, the
    split ``models.data.load_dataset`` makes) and at least ``batch_size`` (the training
    split must fill one batch: training drops a last partial batch); ``test_limit`` at
    most the test split. With no ``train_limit`` a training split smaller than one batch
    is ``batch_size``'s problem (at ``("batch_size",)``), since it is the field to lower."""
    dataset = info.name
    problems: list[tuple[tuple[str, ...], str]] = []
    capacity = info.capacity(data.validation)
    held = " less the 10% validation hold-out" if data.validation == "holdout" else ""
    train = data.train_limit
    if train is not None and train > capacity:
        problems.append((("data", "train_limit"),
                         f"train_limit {train} exceeds the {capacity} training images of "
                         f"{dataset} ({info.train_size}{held})"))
    per_image = info.crops_per_image(data.crop)  # images larger than the crop: crops
    images = train if train is not None else capacity
    if images * per_image < batch_size:
        crops = (f"{per_image} random crops of {data.crop} px from each: "
                 f"{images * per_image} crops") if per_image > 1 else ""
        if train is None:
            detail = ", ".join(filter(None, (held and f"of {info.train_size}{held}",
                                             crops)))
            problems.append((("batch_size",),
                             f"batch_size {batch_size} exceeds the training split of "
                             f"{dataset}: its {capacity} training images"
                             f"{f' ({detail})' if detail else ''} do not fill one batch; "
                             f"lower batch_size to at most {capacity * per_image}"))
        else:
            problems.append((("data", "train_limit"),
                             f"train_limit {train} images of {dataset}"
                             f"{f' ({crops})' if crops else ''} do not fill "
                             f"one batch of batch_size {batch_size}: raise train_limit or "
                             f"lower batch_size"))
    if data.test_limit is not None and data.test_limit > info.test_size:
        problems.append((("data", "test_limit"),
                         f"test_limit {data.test_limit} exceeds the {info.test_size} test "
                         f"images of {dataset}"))
    return problems


class CompressionOptions(_Strict):
    """What evaluation measures about real bytes (models.compression)."""

    bits: QuantBits = Field(default=8, description="bits per latent value when the latent "
                            "is quantised for the measured bytes per image (scale and "
                            "offset fitted per run on training latents)")
    codecs: list[CodecName] = Field(
        default=list(DEFAULT_CODECS),  # a default (not a factory): the schema and form show it
        description="standard codecs matched to each run's bytes per image and measured "
        "over a quality range (avif: only where Pillow supports it; slow)")

    @field_validator("codecs")
    @classmethod
    def _unique_codecs(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("codecs lists a name twice")
        return value


MAX_EVAL_SIZE = 512  # data.crop's bound: no model here is evaluated at a larger side
MAX_EVAL_SIZES = 16


class EvaluationOptions(_Strict):
    """What evaluation measures beyond the run's own crop."""

    sizes: list[int] = Field(
        default=[], max_length=MAX_EVAL_SIZES,
        description="also evaluate the trained model at these input sides in px (1.."
        f"{MAX_EVAL_SIZE}, each once), as extra rows of the run's measures: where its "
        "architecture allows (its crop; a resizable architecture, as progressive "
        "resizing's, also half of it); a size it cannot take is reported unsupported, "
        "with why. Images served resized to the size (MNIST, CIFAR-10), or whole images "
        "as tiles of it")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, value: list[int]) -> list[int]:
        bad = [v for v in value if not 1 <= v <= MAX_EVAL_SIZE]
        if bad:
            raise ValueError(f"sizes are sides in px from 1 to {MAX_EVAL_SIZE}, not "
                             f"{', '.join(map(str, bad))}")
        repeated = sorted({v for v in value if value.count(v) > 1})
        if repeated:
            raise ValueError(f"sizes lists {', '.join(map(str, repeated))} more than once")
        return value


class TrainingOptions(_Strict):
    """What every run of an experiment shares: budget, schedule, search, data, resources."""

    epochs: int = Field(default=15, ge=1)
    batch_size: int = Field(default=128, ge=2, le=4096,
                            description="at least 2: BatchNorm needs two images")
    schedule: Schedule = "seed"
    precision: Precision = Field(
        default="auto", description="the forward pass's arithmetic: auto (bf16 autocast on "
        "CUDA, fp32 elsewhere), fp32 (no autocast: the study's), or bf16 (autocast on any "
        "device); the loss and the optimiser step are fp32 in all three")
    lr_search: LrSearch = Field(default_factory=LrSearch)
    data: DataOptions = Field(default_factory=DataOptions)
    resources: Resources = Field(default_factory=Resources)
    classifier: ClassifierBudget = Field(default_factory=ClassifierBudget)
    pretrained: bool = Field(default=True, description="ImageNet weights where a variant "
                             "uses them; false: random init (offline-friendly)")
    gallery_samples: int = Field(
        default=8, ge=1, le=64, description="test images each run reconstructs for the "
        "gallery at evaluation: the first N of the test split, the same for every run of a "
        "dataset")
    compression: CompressionOptions = Field(default_factory=CompressionOptions)
    evaluation: EvaluationOptions = Field(default_factory=EvaluationOptions)


class RunSpec(TrainingOptions):
    """Everything one run needs to execute, and nothing else."""

    model: VariantName = Field(description="the run's variant: a preset's name, or the "
                               "name of the recipe it carries")
    recipe: Recipe = Field(description="what to build and how to train it (a run spec "
                           "stored before recipes existed gets the preset named by model)")
    dataset: Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
    latent_dim: int | None = Field(default=None, ge=1, le=8192,
                                   description="None: the recipe's (1000, or 1024)")
    seed: int = Field(default=0, ge=0, le=MAX_SEED,
                      description="drives everything random in the run: init, data order, "
                      "augmentation, the Tune search's samples")
    shared_seed: int | None = Field(
        default=None, ge=0, le=MAX_SEED,
        description="the experiment's first seed: it seeds what runs differing only in seed "
        "share, the train/validation split and the reference classifier; None: the run's")
    rd_lambda: float | None = Field(
        default=None, gt=0, le=100, description="recipes with loss rate_distortion only: "
        f"λ of their rate + λ·255²·MSE loss (None: {DEFAULT_RD_LAMBDA})")

    @model_validator(mode="before")
    @classmethod
    def _a_presets_recipe(cls, data: Any) -> Any:
        # Run specs stored before recipes name a preset only.
        if isinstance(data, dict) and data.get("recipe") is None \
                and data.get("model") in PRESETS:
            return {**data, "recipe": PRESETS[data["model"]].recipe}
        return data

    @model_validator(mode="after")
    def _named_by_its_recipe(self) -> Self:
        if self.recipe.name != self.model:
            raise ValueError(f"model {self.model!r} is not its recipe's name "
                             f"{self.recipe.name!r}")
        arch = ARCHITECTURES.get(self.recipe.architecture)
        problem = arch.crop_problem(self.data.crop) if arch is not None else None
        if problem:
            raise ValueError(f"data.crop: {problem}")
        if self.rd_lambda is not None and not self.recipe.trains_rate:
            raise ValueError(f"rd_lambda applies to {RATE_ARCHITECTURES} only (recipes "
                             f"trained on rate + λ·distortion), not {self.model}")
        return self

    @property
    def effective_rd_lambda(self) -> float | None:
        """λ of a rate-distortion run (the spec's or the default), else None."""
        if not self.recipe.trains_rate:
            return None
        return self.rd_lambda if self.rd_lambda is not None else DEFAULT_RD_LAMBDA

    @model_validator(mode="after")
    def _fits_the_dataset(self) -> Self:
        # A plugin dataset's facts are known where the spec was made (the API); a driver
        # that has not described it leaves the check to the loader.
        info = known_dataset_info(self.dataset)
        problems = data_limit_problems(self.data, info, self.batch_size) if info else []
        if problems:
            raise ValueError("; ".join(f"{'.'.join(loc)}: {msg}" for loc, msg in problems))
        return self

    def size_plan(self) -> list[tuple[int, str | None]]:
        """Each of ``evaluation.sizes`` with why this run's model cannot be evaluated at
        it (``models.catalog.size_problem``), or None where it can."""
        return [(size, size_problem(self.recipe, self.data.crop, size))
                for size in self.evaluation.sizes]

    @property
    def fixed_lr(self) -> float:
        """The `fixed` method's LR: the spec's, else the recipe's for the dataset (the
        study's hand-picked phase-2 LR), else :data:`DEFAULT_LR`."""
        return self.lr_search.lr or self.recipe.lr.get(self.dataset, DEFAULT_LR)

    @property
    def split_seed(self) -> int:
        """Seeds the train/validation split and the reference classifier: the same for
        every seed of a sweep, so that seeds vary the training alone."""
        return self.seed if self.shared_seed is None else self.shared_seed

    @property
    def effective_latent_dim(self) -> int:
        latent = self.latent_dim or self.recipe.latent_dim
        assert latent is not None  # a run spec's recipe is resolved (models.catalog.resolve)
        return latent

    def label(self) -> str:
        lam = f"-l{self.rd_lambda:g}" if self.rd_lambda is not None else ""
        return f"{self.model}-{self.dataset}{lam}"
