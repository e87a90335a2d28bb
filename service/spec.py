"""The experiment spec: what a user POSTs. It composes the run contract's option models
(``workers.spec``) and adds only what spans runs: the grid (models × datasets × latent
sizes × seeds), the name, the reference to compare with and the expectations to check.
Unknown fields are refused; every default is the study's unless better practice says
otherwise (validation split held out of train)."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from models.catalog import (
    IMAGE_SIZE,
    MS_SSIM_MIN_SIDE,
    Recipe,
    architecture_info,
    get_variant,
    recipe_problems,
    resolve,
    variant_names,
)
from models.datasets import dataset_info, known_dataset_info
from models.plugins import PluginUnavailable
from service.search import SearchSpec, apply
from service.text import refused_in
from workers.measures import BY_NAME, EXPECTABLE, MEASURES, Need
from workers.spec import (
    MAX_SEED,
    RATE_ARCHITECTURES,
    DatasetName,
    EnumOf,
    LrSearch,
    RunSpec,
    TrainingOptions,
    _Strict,
)

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_BOUND = re.compile(r"^\s*(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Bound:
    """One expectation on one measure: ``measure op value`` (e.g. ``mse <= 0.001``)."""

    measure: str
    op: str  # one of OPERATORS
    value: float

    @classmethod
    def parse(cls, measure: str, text: str) -> Bound:
        """``"<= 0.001"`` → Bound(measure, "<=", 0.001); ValueError naming what is wrong."""
        if measure not in EXPECTABLE:
            raise ValueError(f"unknown measure {measure!r}; valid: {', '.join(EXPECTABLE)}")
        found = _BOUND.match(text) if isinstance(text, str) else None
        if found is None or not math.isfinite(float(found.group(2))):
            raise ValueError(f"bound {text!r} on {measure} must read like '<= 0.001' "
                             "(<=, >=, < or > and a finite number)")
        return cls(measure, found.group(1), float(found.group(2)))

    def holds(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.value)

    def unmeetable(self) -> str | None:
        """Why no value its measure can take meets this bound (its ``MeasureInfo.span``,
        the least and most it can be, both included: ``mse < 0``, ``accuracy > 1``), or
        None when some value does."""
        info = BY_NAME[self.measure]
        if any(map(self.holds, info.span)):  # a bound is a half-line: an end meets it
            return None
        return (f"{self} can never be met: {self.measure} lies in {info.span_text}; every "
                "run would be REGRESSED, so drop or change this bound")

    def __str__(self) -> str:
        return f"{self.measure} {self.op} {self.value:g}"


class Tolerance(_Strict):
    """When a measure of ours reproduces the study's (``reference: "study"``)."""

    mse: float = Field(default=0.10, ge=0, le=10, description="relative: |ours − study| "
                       "at most this share of the study's MSE (0.10: within 10 %)")
    mae: float = Field(default=0.10, ge=0, le=10, description="relative, as for mse")
    accuracy_points: float = Field(default=2.0, ge=0, le=100, description="classifier "
                                   "accuracy may fall at most this many percentage points "
                                   "below the study's")


def _variant_ref(value: Any, handler: Any, info: ValidationInfo) -> str | Recipe:
    """A name of the catalog's variants, or an inline recipe that can work (its problems
    named by field: models[i].architecture, models[i].progressive, …). A recipe's
    ``plugin`` is the server's to fill: given on input it is refused (null, as a dry run's
    ``spec`` echoes it, is not); a stored spec (context ``{"stored": True}``) keeps its."""
    stored = bool(info.context and info.context.get("stored"))
    if isinstance(value, dict) and value.get("plugin") is not None and not stored:
        raise ValidationError.from_exception_data("Recipe", [InitErrorDetails(
            type=PydanticCustomError("server_field", "plugin is set by the server from "
                                     "the architecture's distribution: leave it out"),
            loc=("plugin",), input=value["plugin"])])
    if isinstance(value, str):
        try:
            get_variant(value)
        except (KeyError, PluginUnavailable) as exc:
            raise PydanticCustomError("unknown_variant", str(exc.args[0])) from None
        return value
    if not isinstance(value, dict | Recipe):
        raise PydanticCustomError("variant_ref", "a variant's name (GET /catalog) or an "
                                  "inline recipe with a name and an architecture")
    recipe = Recipe.model_validate(value)  # its field errors come back under models[i]
    problems: list[tuple[tuple[str, ...], str, Any]] = [
        ((field,), msg, getattr(recipe, field)) for field, msg in recipe_problems(recipe)]
    if recipe.name in variant_names():
        problems.insert(0, (("name",), f"{recipe.name!r} is the name of a catalog variant: "
                                       "name a composed recipe otherwise", recipe.name))
    problems += _lr_problems(recipe.lr)
    if problems:
        raise ValidationError.from_exception_data("Recipe", [InitErrorDetails(
            type=PydanticCustomError("recipe", msg), loc=loc, input=given)
            for loc, msg, given in problems])
    return recipe


# A recipe's per-dataset LR obeys lr_search.lr's bounds (the same constraints, read from it).
_LR = TypeAdapter(Annotated[float, *LrSearch.model_fields["lr"].metadata])


def _lr_problems(lr: dict[str, float]) -> list[tuple[tuple[str, ...], str, Any]]:
    """A recipe's ``lr`` entries that name no dataset here, or whose LR is outside
    lr_search.lr's bounds, as (loc, message, input) under ``lr.<dataset>``."""
    problems: list[tuple[tuple[str, ...], str, Any]] = []
    for dataset, value in lr.items():
        try:
            dataset_info(dataset)
        except (KeyError, PluginUnavailable) as exc:
            problems.append((("lr", dataset), f"keys of lr are dataset names: "
                             f"{exc.args[0]}", dataset))
            continue
        try:
            _LR.validate_python(value)
        except ValidationError as exc:
            problems.append((("lr", dataset), exc.errors()[0]["msg"], value))
    return problems


# One entry of an experiment's models: a variant's name, or a recipe composed inline.
VariantRef = Annotated[Annotated[str, EnumOf(variant_names)] | Recipe,
                       WrapValidator(_variant_ref)]


def _name(ref: str | Recipe) -> str:
    return ref if isinstance(ref, str) else ref.name


def _one_form(info: ValidationInfo, single: str, plural: str, values: list[int] | None
              ) -> list[int] | None:
    if values is None:
        return None
    if info.data.get(single) is not None:
        raise ValueError(f"give {single} or {plural}, not both")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{plural} lists {', '.join(map(str, repeated))} more than once")
    return values


def _unmeetable_bounds(expect: dict[str, dict[str, str]]
                       ) -> list[tuple[tuple[str, ...], str, str]]:
    """The bounds of ``expect`` no value of their measure can meet (:meth:`Bound.unmeetable`),
    as (loc, message, input): such a bound would make every run REGRESSED."""
    return [((key, measure), why, text) for key, bounds in expect.items()
            for measure, text in bounds.items()
            if (why := Bound.parse(measure, text).unmeetable()) is not None]


def _unmeasurable_bounds(expect: dict[str, dict[str, str]], info: ValidationInfo
                         ) -> list[tuple[tuple[str, ...], str, str]]:
    """The bounds of ``expect`` on measures its runs cannot have (:func:`unmeasured`
    under the spec's data.crop, classifier and data.test_limit), as (loc, message,
    input): such a bound would make every run REGRESSED."""
    data, clf = info.data.get("data"), info.data.get("classifier")
    problems: list[tuple[tuple[str, ...], str, str]] = []
    for key, bounds in expect.items():
        dataset = key.partition("/")[2]
        lacking = {m: u for u in unmeasured(
            dataset, crop=data.crop if data is not None else None,
            classifier=clf.enabled if clf is not None else True,
            test_limit=data.test_limit if data is not None else None) for m in u.measures}
        problems += [((key, measure), f"{measure} cannot be measured on {dataset}: "
                      f"{lacking[measure].reason}; every run would be REGRESSED, so drop "
                      "this bound", text)
                     for measure, text in bounds.items() if measure in lacking]
    return problems


class ExperimentSpec(TrainingOptions):
    name: str = Field(default="", max_length=200,
                      description="free text without control or format characters (no "
                      "newlines, no bidi controls)")
    models: list[VariantRef] = Field(
        min_length=1, description="variants (GET /catalog) by name, or recipes composed "
        'inline: {"name": "ps_feature", "architecture": "pixel_shuffle", "loss": "feature"}')
    datasets: list[DatasetName] = Field(min_length=1)
    latent_dim: int | None = Field(default=None, ge=1, le=8192,
                                   description="one latent size for every run; None: each "
                                   "variant's (1000, or 1024)")
    latent_dims: list[int] | None = Field(
        default=None, min_length=1, max_length=64,
        description="latent sizes to sweep (each 1..8192), instead of latent_dim")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="one seed for "
                             "every run (default 0)")
    seeds: list[int] | None = Field(default=None, min_length=1, max_length=64,
                                    description="seeds to sweep, instead of seed; the "
                                    "first also seeds the split and reference classifier")
    reference: Literal["study"] | None = Field(
        default=None, description="study: the study's published (or notebook-corrected) "
        "values beside ours in the results, with whether we reproduce them")
    tolerance: Tolerance = Field(default_factory=Tolerance)
    expect: dict[str, dict[str, str]] | None = Field(
        default=None, description='bounds per "model/dataset" on its measures, e.g. '
        '{"baseline/mnist": {"mse": "<= 0.001"}}: each run PASSED or REGRESSED')
    lambdas: list[float] | None = Field(
        default=None, min_length=1, max_length=16,
        description="λ values of the rate + λ·255²·MSE loss: each is one run per dataset "
        "of every model trained on it (loss rate_distortion; the grid is models × datasets "
        "× lambdas for those)")
    search: SearchSpec | None = Field(
        default=None, description="sample run settings instead of a grid: num_samples runs "
        "per (model, dataset), proposed by random, tpe or grid, weak ones pruned (README: "
        "Searching a run's settings)")

    @field_validator("lambdas")
    @classmethod
    def _lambdas(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if value is None:
            return value
        if any(not (0 < v <= 100) for v in value):
            raise ValueError("each lambda must be > 0 and ≤ 100")
        if len(set(value)) != len(value):
            raise ValueError("lambdas lists a value twice")
        models = info.data.get("models")
        if models is not None and not any(resolve(m).trains_rate for m in models):
            raise ValueError(f"lambdas apply to recipes trained on rate + λ·distortion "
                             f"({RATE_ARCHITECTURES}), which models does not list")
        return value

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        # Control characters (NUL, newline, tab, …) would forge lines in exports, and
        # PostgreSQL refuses NUL where SQLite stores it: both databases answer 422. Bidi
        # and other format controls would reorder what pages and exports show
        # (service.text).
        bad = refused_in(value)
        if bad:
            raise ValueError(f"must not contain control characters or format controls "
                             f"such as bidi overrides ({', '.join(bad)})")
        return value

    @field_validator("models", "datasets")
    @classmethod
    def _unique(cls, values: list[Any], info: ValidationInfo) -> list[Any]:
        names = [_name(v) for v in values]
        twice = [(i, n) for i, n in enumerate(names) if n in names[:i]]
        if twice:  # at each repeat's index, as every other problem of an entry
            raise ValidationError.from_exception_data(info.field_name or "", [
                InitErrorDetails(type=PydanticCustomError(
                    "duplicate", f"{info.field_name} lists {n!r} twice (first at "
                    f"{names.index(n)})"), loc=(i,), input=n) for i, n in twice])
        return values

    @field_validator("models")
    @classmethod
    def _takes_the_crop(cls, values: list[Any], info: ValidationInfo) -> list[Any]:
        data = info.data.get("data")
        crop = data.crop if data is not None else IMAGE_SIZE
        problems = []
        for m in values:
            recipe = resolve(m)
            problem = architecture_info(recipe.architecture).crop_problem(crop)
            if problem:
                problems.append(f"{recipe.name}: {problem} (data.crop)")
        if problems:
            raise ValueError("; ".join(problems))
        return values

    @field_validator("latent_dims")
    @classmethod
    def _latent_dims(cls, values: list[int] | None, info: ValidationInfo) -> list[int] | None:
        for v in values or ():
            if not 1 <= v <= 8192:
                raise ValueError(f"latent size {v} is outside 1..8192")
        return _one_form(info, "latent_dim", "latent_dims", values)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, values: list[int] | None, info: ValidationInfo) -> list[int] | None:
        for v in values or ():
            if not 0 <= v <= MAX_SEED:
                raise ValueError(f"seed {v} is outside 0..{MAX_SEED}")
        return _one_form(info, "seed", "seeds", values)

    @field_validator("expect")
    @classmethod
    def _expect(cls, value: dict[str, dict[str, str]] | None, info: ValidationInfo
                ) -> dict[str, dict[str, str]] | None:
        for key, bounds in (value or {}).items():
            model, _, dataset = key.partition("/")
            if model not in map(_name, info.data.get("models", ())) or \
                    dataset not in info.data.get("datasets", ()):
                raise ValueError(f"{key!r} names no (model, dataset) of this experiment: "
                                 "write it as model/dataset, e.g. baseline/mnist")
            if not bounds:
                raise ValueError(f"{key!r} has no bounds")
            for measure, text in bounds.items():
                Bound.parse(measure, text)
        stored = bool(info.context and info.context.get("stored"))
        problems = [] if stored else [
            ("unmeetable", loc, msg, given) for loc, msg, given in _unmeetable_bounds(value or {})
        ] + [("unmeasurable", loc, msg, given)
             for loc, msg, given in _unmeasurable_bounds(value or {}, info)]
        if problems:  # at each bound's own place: expect.<model/dataset>.<measure>
            raise ValidationError.from_exception_data("expect", [InitErrorDetails(
                type=PydanticCustomError(kind, msg), loc=loc, input=given)
                for kind, loc, msg, given in problems])
        return value

    @model_validator(mode="after")
    def _search_alone(self, info: ValidationInfo) -> ExperimentSpec:
        """A searched field is not also fixed or swept; sweeps do not multiply a search;
        every value the space can draw makes a valid run (each problem named at
        ``search.space.<name>``, or at the sweep's field). A stored spec (context
        ``{"stored": True}``) was checked when it was submitted: its dump spells out every
        default (``lr_search.method``, ``compression.bits``), which a sample overrides."""
        search = self.search
        if search is None or (info.context and info.context.get("stored")):
            return self
        problems: list[InitErrorDetails] = []

        def problem(loc: tuple[Any, ...], msg: str, given: Any) -> None:
            problems.append(InitErrorDetails(type=PydanticCustomError("search", msg),
                                             loc=loc, input=given))

        for sweep in ("seeds", "latent_dims", "lambdas"):
            if getattr(self, sweep) is not None:
                problem((sweep,), f"{sweep} sweeps do not combine with search: search the "
                        "field (search.space) or give one value", getattr(self, sweep))
        given_too = {"latent_dim": self.latent_dim, "lr": self.lr_search.lr,
                     "epochs": self.epochs if "epochs" in self.model_fields_set else None,
                     "batch_size": self.batch_size if "batch_size" in self.model_fields_set
                     else None,
                     "schedule": self.schedule if "schedule" in self.model_fields_set
                     else None,
                     "bits": self.compression.bits
                     if "bits" in self.compression.model_fields_set else None}
        fixed_at = {"lr": "lr_search.lr", "bits": "compression.bits"}
        for name in search.space:
            if given_too.get(name) is not None:
                problem(("search", "space", name), f"{name} is searched and also given as "
                        f"{fixed_at.get(name, name)}: search it or fix it, not both",
                        given_too[name])
        if "lr" in search.space and "method" in self.lr_search.model_fields_set \
                and self.lr_search.method != "fixed":
            problem(("search", "space", "lr"), f"a searched lr trains at the sampled LR "
                    f"(lr_search.method fixed), not lr_search.method "
                    f"{self.lr_search.method}", self.lr_search.method)
        for base in self.run_specs() if not problems else ():
            reason = _unmeasurable_metric(search.metric, base.recipe, base.dataset,
                                          crop=self.data.crop,
                                          classifier=self.classifier.enabled,
                                          test_limit=self.data.test_limit)
            if reason is not None:  # every sample would end without the metric
                problem(("search", "metric"), f"{search.metric} cannot be measured for "
                        f"{base.model} on {base.dataset}: {reason}; the search would "
                        "have no metric to compare its samples by, so search another "
                        "measure", search.metric)
                break
        rate = [resolve(m).trains_rate for m in self.models]
        if "rd_lambda" in search.space and not any(rate):
            problem(("search", "space", "rd_lambda"), f"rd_lambda applies to recipes "
                    f"trained on rate + λ·distortion ({RATE_ARCHITECTURES}), which models "
                    "does not list", "rd_lambda")
        if not problems:  # each value the space can draw, on each run it applies to
            for base in self.run_specs():
                dumped = base.model_dump(mode="json")
                space = search.space_for(base.recipe.trains_rate)
                for name, dist in space.items():
                    for value in dist.endpoints():
                        try:
                            RunSpec.model_validate(apply(dumped, {name: value}))
                        except ValidationError as exc:
                            problem(("search", "space", name), f"{name} {value!r} makes no "
                                    f"valid run of {base.model} on {base.dataset}: "
                                    f"{exc.errors()[0]['msg']}", value)
                            break
        if problems:
            seen: set[tuple[Any, ...]] = set()  # one problem per field
            problems = [p for p in problems if not (p["loc"] in seen or seen.add(p["loc"]))]
            raise ValidationError.from_exception_data("ExperimentSpec", problems)
        return self

    @property
    def run_count(self) -> int:
        """Runs the experiment makes: the grid's, or a search's samples."""
        bases = len(self.run_specs())
        return bases * self.search.num_samples if self.search is not None else bases

    @property
    def model_names(self) -> list[str]:
        """The names of the models, in the spec's order (inline recipes by theirs)."""
        return [_name(m) for m in self.models]

    @property
    def latent_sizes(self) -> list[int | None]:
        """The grid's latent sizes (None: each variant's own)."""
        return list(self.latent_dims) if self.latent_dims else [self.latent_dim]

    @property
    def seed_values(self) -> list[int]:
        """The grid's seeds, the first shared by all runs for split and classifier."""
        if self.seeds:
            return list(self.seeds)
        return [self.seed if self.seed is not None else 0]

    def grid_text(self) -> str:
        """The grid's product in words, e.g. ``2 models × 1 datasets × 2 latent sizes × 3
        seeds``."""
        if self.search is not None:
            return (f"{len(self.models)} models × {len(self.datasets)} datasets × "
                    f"{self.search.num_samples} samples")
        text = (f"{len(self.models)} models × {len(self.datasets)} datasets × "
                f"{len(self.latent_sizes)} latent sizes × {len(self.seed_values)} seeds")
        if self.lambdas:
            rate = [r.name for r in map(resolve, self.models) if r.trains_rate]
            text += f", {', '.join(rate)} × {len(self.lambdas)} lambdas"
        return text

    def bounds(self, model: str, dataset: str) -> list[Bound]:
        """The expectations on runs of (model, dataset), in the spec's order."""
        given = (self.expect or {}).get(f"{model}/{dataset}", {})
        return [Bound.parse(m, t) for m, t in given.items()]

    def run_specs(self) -> list[RunSpec]:
        """One run spec per grid point, in a stable order: dataset, model, latent size,
        λ (recipes trained on rate + λ·distortion only, when ``lambdas`` is given), seed
        (dataset-major). Every run carries its complete recipe and the experiment's first
        seed as its ``shared_seed``. With ``search``, one per (model, dataset): the spec
        each sample sets its values in (``service.search.apply``); a searched ``lr``
        trains at the sampled LR (``lr_search.method`` fixed)."""
        shared = TrainingOptions.model_fields.keys()
        options = {k: getattr(self, k) for k in shared}
        seeds = self.seed_values
        recipes = [resolve(m) for m in self.models]

        def lambdas(recipe: Recipe) -> list[float | None]:
            return list(self.lambdas) if recipe.trains_rate and self.lambdas else [None]

        def on(dataset: str) -> dict[str, Any]:
            if self.classifier.enabled and unlabelled(dataset):
                return {**options, "classifier": self.classifier.model_copy(
                    update={"enabled": False})}
            return options

        if self.search is not None and "lr" in self.search.space:
            options["lr_search"] = self.lr_search.model_copy(update={"method": "fixed"})
        return [RunSpec(model=r.name, recipe=r, dataset=d, latent_dim=latent, seed=seed,
                        shared_seed=seeds[0], rd_lambda=lam, **on(d))
                for d in self.datasets for r in recipes
                for latent in self.latent_sizes for lam in lambdas(r) for seed in seeds]


@dataclass(frozen=True)
class Unmeasured:
    """Measures that no run on a dataset under a spec can have (null for every run), and
    why: one line, said in the results' notes and in the 422 refusing a bound on them."""

    need: Need  # what the runs lack (workers.measures.Need)
    measures: tuple[str, ...]  # the measures it leaves null, in the table's order
    reason: str

    def note(self, dataset: str) -> str:
        """The results' note: ``mnist: no ms_ssim, q_ms_ssim: <reason>``."""
        return f"{dataset}: no {', '.join(self.measures)}: {self.reason}"


def unmeasured(dataset: str, *, crop: int | None = IMAGE_SIZE, classifier: bool = True,
               test_limit: int | None = None) -> list[Unmeasured]:
    """The measures runs on ``dataset`` cannot have, grouped by what they lack (each
    measure's ``needs`` in the measures table, the first unmet one): labels (an unlabelled
    set), the reference classifier (``classifier`` false), one code per image (images
    larger than ``crop`` are evaluated whole, as tiles), as many test images as classes
    for k-means (``test_limit``), images of at least ``MS_SSIM_MIN_SIDE`` px a side for
    MS-SSIM's 5 scales (the side measured: ``crop`` when images are served resized to it,
    the smallest image's when evaluated whole). ``crop`` None (not known): nothing that
    depends on it is claimed. An unknown dataset: nothing is claimed."""
    info = known_dataset_info(dataset)
    if info is None:
        return []
    lacking: dict[Need, str] = {}
    if info.num_classes is None:
        lacking["labels"] = (f"its images have no labels ({info.description}), so there "
                             "is no reference classifier to measure reconstructions with, "
                             "nor classes to probe the codes for")
    elif not classifier:
        lacking["classifier"] = "the spec trains no reference classifier (classifier." \
                                "enabled is false)"
    whole = crop is not None and info.whole_at(crop)
    if whole:
        lacking["codes"] = (f"its images are evaluated whole, as tiles of data.crop ({crop} "
                            "px): there is no one code per image to probe")
    tests = min(test_limit or info.test_size, info.test_size)
    if info.num_classes is not None and tests < info.num_classes:
        lacking["clusters"] = (f"k-means needs at least as many test images as classes "
                               f"({info.num_classes}), and the runs test {tests} "
                               "(data.test_limit)")
    small = info.native_size or info.min_size
    side = (min(small) if small else None) if whole else crop
    if side is not None and side < MS_SSIM_MIN_SIDE:
        where = "its smallest image" if whole else "data.crop, the side its images are " \
                                                   "served and measured at"
        lacking["ms_ssim_side"] = (
            f"MS-SSIM's 5 scales need images of at least {MS_SSIM_MIN_SIDE} px a side "
            f"(torchmetrics: side // 16 > 10, its 11-px window at the coarsest scale), and "
            f"these are measured at {side} px ({where})")
    out: list[Unmeasured] = []
    said: set[str] = set()
    for need, reason in lacking.items():
        names = tuple(m.name for m in MEASURES if need in m.needs and m.name not in said)
        said.update(names)
        if names:
            out.append(Unmeasured(need, names, reason))
    return out


def _unmeasurable_metric(metric: str, recipe: Recipe, dataset: str, *, crop: int | None,
                         classifier: bool, test_limit: int | None) -> str | None:
    """Why runs of ``recipe`` on ``dataset`` cannot have the measure ``metric`` (null in
    every one: :func:`unmeasured`'s dataset-level reasons, or the recipe's own: λ exists
    only for rate recipes, quantiser bits only without a learned entropy model), or None
    when they can."""
    for lack in unmeasured(dataset, crop=crop, classifier=classifier,
                           test_limit=test_limit):
        if metric in lack.measures:
            return lack.reason
    if metric == "rd_lambda" and not recipe.trains_rate:
        return (f"rd_lambda is recorded for recipes trained on rate + λ·distortion "
                f"({RATE_ARCHITECTURES}) only")
    if metric == "quant_bits":
        try:
            own_coder = architecture_info(recipe.architecture).entropy_model
        except (KeyError, PluginUnavailable):
            own_coder = False  # refused elsewhere, by the models field
        if own_coder:
            return ("its learned entropy model codes the latent itself: there is no "
                    "quantiser, so no quant_bits")
    return None


def unlabelled(dataset: str) -> bool:
    """Whether ``dataset`` has no labels (a flat folder, ``photos``, ``kodak``): its runs
    train no reference classifier (:func:`unmeasured` says what they lack). False for a
    labelled or unknown dataset."""
    info = known_dataset_info(dataset)
    return info is not None and info.num_classes is None
