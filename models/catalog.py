"""The recipe vocabulary as plain data: architectures, losses, recipes and the study's
presets, and where each entry comes from.

A **recipe** is a point on orthogonal axes — an ``architecture`` (a registered builder:
built-in, or a plugin's), a ``loss``, ``progressive`` resizing, ``encoder_weights`` and the
per-dataset learning rates where known. The study's six rows and ``factorized_prior`` are
**presets**: named recipes with a title. A spec names presets (or plugin variants) or
composes recipes inline; which combinations can work is decided by each architecture's
capabilities (:class:`ArchitectureInfo`), never by its name.

Torch-free: the API validates specs against it and never loads torch. Built-in
architectures are named by an import target that ``models.builders`` resolves on the
torch side; plugin architectures by their entry point (``models.plugins``), described to
this process by the plugin probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from models import plugins
from models.assets import WeightsName
from models.datasets import DATASETS
from models.registry import AELAB, NAME_PATTERN, Registry, Source

IMAGE_SIZE = 32  # model space: every image is served to the models as 3×32×32
INPUT_VALUES = 3 * IMAGE_SIZE * IMAGE_SIZE
DEFAULT_LATENT_DIM = 1000  # the study's code size, for architectures that name none
MAX_LATENT_DIM = 8192
# factorized_prior's λ when a spec gives none: the middle of CompressAI's MSE grid
# (0.0018 … 0.0483 for its quality levels 1–6).
DEFAULT_RD_LAMBDA = 0.0067
# MS-SSIM's 5 scales (Wang, Simoncelli & Bovik 2003; torchmetrics' betas) halve the image 4
# times and need the 11-px window to fit the coarsest: torchmetrics asks side // 2⁴ > 11 − 1,
# a side of 176 px at least (models.metrics; the API refuses bounds on it below that).
MS_SSIM_MIN_SIDE = 176

LossName = Literal["mse", "feature", "rate_distortion"]
EncoderWeights = Literal["none", "imagenet"]


# ---------------------------------------------------------------------------------------
# Architectures and losses


@dataclass(frozen=True)
class ArchitectureInfo:
    """A registered builder and what it can do. The capabilities decide which recipes
    over it can work; a test checks each against the built-in class itself."""

    name: str
    title: str
    description: str
    target: str  # "module:attr" building it from latent_dim (and its options)
    default_latent_dim: int = DEFAULT_LATENT_DIM
    params: int | None = None  # at the default latent size; None: not known before a build
    resizable: bool = False  # can change its output size: progressive resizing
    pretrained_body: WeightsName | None = None  # an encoder body with these ImageNet weights
    layer_groups: bool = False  # discriminative LR groups (the pretrained arm's phase 2)
    entropy_model: bool = False  # a learned entropy model: rate-distortion, its own coder
    options: tuple[str, ...] = ()  # builder keywords besides latent_dim, e.g. icnr
    source: Source = AELAB
    # The crops (data.crop) it takes: multiples of this stride; None:
    # the study's 32 px only (a plugin that says nothing)
    crop_stride: int | None = None

    def crop_problem(self, crop: int) -> str | None:
        """Why it cannot take ``crop`` px inputs, or None."""
        stride = self.crop_stride
        if stride is None:
            return None if crop == IMAGE_SIZE else (
                f"{self.name} takes {IMAGE_SIZE} px crops only (its plugin names no "
                "crop_stride)")
        if crop % stride or crop < stride:
            return f"{self.name} takes crops that are multiples of {stride} px, not {crop}"
        return None

    def size_problem(self, crop: int, size: int) -> str | None:
        """Why a model of it trained at ``crop`` px cannot be evaluated at ``size`` px
        (its input and output side; ``evaluation.sizes``), or None. Every architecture
        takes its crop; one that can change its output size (``resizable``) also takes
        half of it, as progressive resizing's first stage does (16 px at the study's 32):
        the same sizes ``Autoencoder.set_output_size`` accepts (a test checks both)."""
        if size == crop:
            return None
        if self.resizable:
            if size == crop // 2:
                return None
            return (f"{self.name} trained at {crop} px changes its output to {crop // 2} "
                    f"or {crop} px only")
        return (f"{self.name} cannot change its output size: a model trained at {crop} "
                f"px takes {crop} px only")


ARCHITECTURES: Registry[ArchitectureInfo] = Registry("architecture")
for _arch in (
    ArchitectureInfo(
        "conv", "Conv autoencoder", "Conv encoder, Linear 1536→latent bottleneck, "
        "nearest-upsample decoder (the study's baseline).",
        "models.architectures:ConvAutoencoder", params=3_080_629, resizable=True,
        options=("crop",), crop_stride=4),
    ArchitectureInfo(
        "pixel_shuffle", "Pixel-shuffle autoencoder", "Baseline encoder; decoder upsamples "
        "with weight-normed 1×1 convs, pixel shuffle and blur.",
        "models.architectures:PixelShuffleAutoencoder", params=3_079_042, resizable=True,
        options=("icnr", "crop"), crop_stride=4),
    ArchitectureInfo(
        "resnet", "ResNet34-encoder autoencoder", "ResNet34 body + concat pool (latent "
        "1024), the baseline decoder; its body takes ImageNet weights.",
        "models.architectures:ResNetAutoencoder", default_latent_dim=1024,
        params=22_862_105, pretrained_body="resnet34", layer_groups=True, options=("crop",),
        crop_stride=32),
    ArchitectureInfo(
        "factorized_prior", "Factorized prior", "Baseline encoder/decoder with a learned "
        "factorised entropy model on the latent (Ballé et al. 2017); codes its own "
        "bitstream.", "models.factorized_prior:FactorizedPriorAutoencoder",
        params=3_123_629, entropy_model=True, options=("crop",), crop_stride=4),
):
    ARCHITECTURES.register(_arch.name, _arch)


@dataclass(frozen=True)
class LossInfo:
    name: str
    title: str
    description: str
    weights: tuple[WeightsName, ...] = ()  # pretrained weights it loads (pretrained: true)
    needs_entropy_model: bool = False  # its rate term reads the model's likelihoods


LOSSES: Registry[LossInfo] = Registry("loss")
for _loss in (
    LossInfo("mse", "Pixel MSE", "Mean squared error of the reconstruction."),
    LossInfo("feature", "Feature loss", "Pixel MSE + VGG16-bn feature and Gram terms "
             "(the study's).", weights=("vgg16_bn",)),
    LossInfo("rate_distortion", "Rate + λ·distortion", "Estimated bits per pixel + "
             "λ·255²·MSE (CompressAI's convention).", needs_entropy_model=True),
):
    LOSSES.register(_loss.name, _loss)


# ---------------------------------------------------------------------------------------
# Recipes


class PluginRef(BaseModel):
    """The distribution an architecture plugin came from on the API host: a worker's
    preflight checks it has the same."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    distribution: str | None
    version: str | None


class Recipe(BaseModel):
    """A variant as data: what to build, how to train it. Stored whole in each run spec,
    so a driver never needs the API's catalog to know what to build."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(pattern=NAME_PATTERN, description="the run's label in results, "
                      "gallery and compare; may not be a preset's")
    architecture: str = Field(pattern=NAME_PATTERN, description="GET /catalog: "
                              "architectures (built-in or a plugin's)")
    loss: LossName = "mse"
    progressive: StrictBool = Field(default=False, description="phase 1 at 16 px, then full "
                              "size (needs an architecture that can change output size)")
    encoder_weights: EncoderWeights = Field(
        default="none", description="imagenet: load the architecture's ImageNet encoder "
        "body (frozen in phase 1, then discriminative learning rates)")
    latent_dim: int | None = Field(default=None, ge=1, le=MAX_LATENT_DIM, description="its "
                                   "latent size (None: the architecture's)")
    lr: dict[str, float] = Field(default_factory=dict, description="phase-2 max learning "
                                 "rate per dataset for lr_search fixed (the study's where "
                                 "known; else lr_search.lr or 1e-3)")
    plugin: PluginRef | None = Field(default=None, description="filled by the service for a "
                                     "plugin architecture")

    @property
    def pretrained_encoder(self) -> bool:
        return self.encoder_weights == "imagenet"

    @property
    def trains_rate(self) -> bool:
        """Trained on rate + λ·distortion (a spec's lambdas and rd_lambda apply)."""
        return LOSSES[self.loss].needs_entropy_model

    @property
    def pretrained_weights(self) -> tuple[WeightsName, ...]:
        """Weights files (``models.assets`` names) it loads when pretrained."""
        body = ARCHITECTURES[self.architecture].pretrained_body \
            if self.pretrained_encoder else None
        return ((body,) if body else ()) + LOSSES[self.loss].weights


@dataclass(frozen=True)
class Variant:
    """A named recipe of the catalog (a preset, or a plugin architecture's own)."""

    recipe: Recipe
    title: str  # the study's row label
    description: str
    source: Source = AELAB
    params: int | None = None  # at its latent size, where known before a build

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def architecture(self) -> str:
        return self.recipe.architecture

    @property
    def loss(self) -> str:
        return self.recipe.loss

    @property
    def latent_dim(self) -> int:
        assert self.recipe.latent_dim is not None  # catalog recipes are resolved
        return self.recipe.latent_dim

    @property
    def progressive(self) -> bool:
        return self.recipe.progressive

    @property
    def pretrained_encoder(self) -> bool:
        return self.recipe.pretrained_encoder

    @property
    def seed_lr(self) -> dict[str, float]:
        """Phase-2 max learning rate the study picked by hand, per dataset (§2)."""
        return self.recipe.lr

    @property
    def pretrained_weights(self) -> tuple[WeightsName, ...]:
        return self.recipe.pretrained_weights

    @property
    def needs_pretrained_weights(self) -> bool:
        return bool(self.pretrained_weights)


def _preset(name: str, title: str, description: str, architecture: str,
            lr: dict[str, float], **axes: Any) -> Variant:
    arch = ARCHITECTURES[architecture]
    recipe = Recipe(name=name, architecture=architecture, latent_dim=arch.default_latent_dim,
                    lr=lr, **axes)
    return Variant(recipe, title, description, params=arch.params)


# The study's variants (seed-experiment §2–4) and factorized_prior: their recipes,
# parameter counts and hand-picked LRs, unchanged.
PRESETS: Registry[Variant] = Registry("variant")
for _variant in (
    _preset("baseline", "Baseline", "Conv encoder, Linear 1536→1000 bottleneck, "
            "nearest-upsample decoder.", "conv", {"mnist": 1e-3, "cifar10": 1e-3}),
    _preset("pixel_shuffle", "Pixel Shuffle", "Baseline encoder; decoder upsamples with "
            "weight-normed 1×1 convs, pixel shuffle and blur.", "pixel_shuffle",
            {"mnist": 1e-3, "cifar10": 1e-3}),
    _preset("progressive_resizing", "Progressive Resizing", "Baseline trained at 16 px "
            "first, then at 32 px by switching the second upsample factor (same "
            "parameters).", "conv", {"mnist": 1.74e-4, "cifar10": 1e-3}, progressive=True),
    _preset("pretrained_resnet", "Pretraining", "ImageNet ResNet34 encoder + concat pool "
            "(latent 1024), frozen in phase 1, then 10 discriminative learning-rate groups.",
            "resnet", {"mnist": 1e-2, "cifar10": 1e-2}, encoder_weights="imagenet"),
    _preset("resnet", "Resnet w/o pretrain", "ResNet34 encoder + concat pool (latent 1024) "
            "from random init.", "resnet", {"mnist": 1e-4, "cifar10": 1e-3}),
    _preset("feature_loss", "Feature Loss", "Baseline trained with pixel MSE + VGG16-bn "
            "feature and Gram terms.", "conv", {"mnist": 1e-4, "cifar10": 1e-3},
            loss="feature"),
    _preset("factorized_prior", "Factorized Prior", "Not in the study: the baseline's "
            "encoder/decoder with a learned factorised entropy model on the latent (Ballé "
            "et al. 2017), trained on rate + λ·distortion; its bitstream is really coded.",
            "factorized_prior", {"mnist": 1e-3, "cifar10": 1e-3}, loss="rate_distortion"),
):
    PRESETS.register(_variant.name, _variant)
VARIANTS: dict[str, Variant] = dict(PRESETS)  # the presets by name


# ---------------------------------------------------------------------------------------
# Plugin architectures (each also a variant of its own name)


def describe_variant_plugin(name: str, build: Any) -> dict[str, Any]:
    """The facts of an ``aelab.variants`` entry point's object (in the plugin probe):
    a callable ``build(latent_dim)`` with optional ``title``, ``default_latent_dim``,
    ``crop_stride`` (it takes ``data.crop`` values that are multiples of it, built as
    ``build(latent_dim, crop=…)``; without it, 32 px only) and a docstring. ValueError
    saying what is wrong otherwise."""
    if not callable(build):
        raise ValueError(f"an aelab.variants entry point names a callable "
                         f"build(latent_dim) -> nn.Module, not {type(build).__name__}")
    latent = getattr(build, "default_latent_dim", DEFAULT_LATENT_DIM)
    if isinstance(latent, bool) or not isinstance(latent, int) \
            or not 1 <= latent <= MAX_LATENT_DIM:
        raise ValueError(f"build.default_latent_dim must be an int in 1..{MAX_LATENT_DIM}, "
                         f"got {latent!r}")
    stride = getattr(build, "crop_stride", None)
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int)
                               or not 1 <= stride <= 512):
        raise ValueError(f"build.crop_stride must be an int in 1..512, got {stride!r}")
    title = getattr(build, "title", None) or name
    doc = (getattr(build, "__doc__", None) or "").strip().splitlines()
    return {"title": str(title), "default_latent_dim": latent,
            "description": doc[0] if doc else "", "crop_stride": stride}


@dataclass(frozen=True)
class PluginVariant:
    """An installed ``aelab.variants`` entry point: its architecture and variant, or why
    it is unavailable."""

    described: plugins.Described
    architecture: ArchitectureInfo | None
    variant: Variant | None
    problem: str | None


def plugin_variants() -> dict[str, PluginVariant]:
    """Installed architecture plugins by name (described by the plugin probe); a name
    given by two distributions is the first's, unavailable (see
    :func:`plugin_variant_entries` for both)."""
    out: dict[str, PluginVariant] = {}
    for p in plugin_variant_entries():
        out.setdefault(p.described.entry.name, p)
    return out


def plugin_variant_entries() -> list[PluginVariant]:
    """Every installed ``aelab.variants`` entry point, two of one name included (each
    unavailable, naming the other)."""
    group = plugins.described()[plugins.VARIANTS_GROUP]
    out: list[PluginVariant] = []
    for d in group:
        problem = plugins.problem(d, group, {*ARCHITECTURES, *PRESETS}, "variant")
        arch = variant = None
        if problem is None:
            e = d.entry
            stride = d.facts.get("crop_stride")
            arch = ArchitectureInfo(e.name, d.facts["title"], d.facts["description"],
                                    e.target, d.facts["default_latent_dim"], source=e.source,
                                    crop_stride=stride, options=("crop",) if stride else ())
            recipe = Recipe(name=e.name, architecture=e.name,
                            latent_dim=arch.default_latent_dim,
                            plugin=PluginRef(distribution=e.distribution, version=e.version))
            variant = Variant(recipe, arch.title, arch.description, e.source)
        out.append(PluginVariant(d, arch, variant, problem))
    return out


def size_problem(recipe: Recipe, crop: int, size: int) -> str | None:
    """Why a run of ``recipe`` trained at ``crop`` px cannot be evaluated at ``size`` px
    (:meth:`ArchitectureInfo.size_problem`), or None. Torch-free and probe-free: a plugin
    architecture (not built in) changes no output size, so it takes its crop only."""
    arch = ARCHITECTURES.get(recipe.architecture)
    if arch is None:
        arch = ArchitectureInfo(recipe.architecture, "", "", "")
    return arch.size_problem(crop, size)


def architecture_info(name: str) -> ArchitectureInfo:
    """A built-in's or an available plugin's architecture. KeyError listing the valid
    names when unknown; PluginUnavailable saying why for a broken plugin."""
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    found = plugin_variants()
    if name in found:
        if found[name].architecture is None:
            raise plugins.PluginUnavailable(f"architecture {name!r} is unavailable: "
                                            f"{found[name].problem}")
        return found[name].architecture  # type: ignore[return-value]
    valid = [*ARCHITECTURES, *(n for n, p in found.items() if p.architecture)]
    raise KeyError(f"unknown architecture {name!r}; valid: {', '.join(valid)}")


def variant_names() -> list[str]:
    """Every variant a spec may name here: the presets, then available plugin variants."""
    return [*PRESETS, *(n for n, p in plugin_variants().items() if p.variant)]


def get_variant(name: str) -> Variant:
    """A preset or an available plugin variant. KeyError listing the valid names when
    unknown; PluginUnavailable saying why for a broken plugin."""
    if name in PRESETS:
        return PRESETS[name]
    found = plugin_variants()
    if name in found:
        if found[name].variant is None:
            raise plugins.PluginUnavailable(f"variant {name!r} is unavailable: "
                                            f"{found[name].problem}")
        return found[name].variant  # type: ignore[return-value]
    raise KeyError(f"unknown variant {name!r}; valid: {', '.join(variant_names())}")


def _able(flag: str) -> str:
    return ", ".join(n for n, a in ARCHITECTURES.items() if getattr(a, flag)) or "none"


def recipe_problems(recipe: Recipe) -> list[tuple[str, str]]:
    """What cannot work in ``recipe``, as (field, message) pairs: an architecture that is
    unknown or unavailable, or an axis the architecture cannot serve."""
    try:
        arch = architecture_info(recipe.architecture)
    except (KeyError, plugins.PluginUnavailable) as exc:
        return [("architecture", str(exc.args[0]))]
    problems = []
    if recipe.progressive and not arch.resizable:
        problems.append(("progressive", f"progressive resizing trains at {IMAGE_SIZE // 2} px "
                         f"first, and architecture {arch.name} cannot change its output "
                         f"size (those that can: {_able('resizable')})"))
    if recipe.pretrained_encoder and not (arch.pretrained_body and arch.layer_groups):
        problems.append(("encoder_weights", f"architecture {arch.name} has no ImageNet "
                         f"encoder body (those with one: {_able('pretrained_body')})"))
    if LOSSES[recipe.loss].needs_entropy_model and not arch.entropy_model:
        problems.append(("loss", f"the {recipe.loss} loss needs a learned entropy model, "
                         f"which architecture {arch.name} has not (those with one: "
                         f"{_able('entropy_model')})"))
    if arch.entropy_model and not LOSSES[recipe.loss].needs_entropy_model:
        problems.append(("loss", f"architecture {arch.name} learns its entropy model "
                         f"through the rate term only: train it with loss rate_distortion"))
    return problems


def resolve(ref: str | Recipe) -> Recipe:
    """The complete recipe a run spec stores: a named variant's, or an inline one with
    its latent size and plugin distribution filled in from its architecture."""
    if isinstance(ref, str):
        return get_variant(ref).recipe
    arch = architecture_info(ref.architecture)
    plugin = PluginRef(distribution=arch.source.distribution, version=arch.source.version) \
        if arch.source.kind == "plugin" else None
    return ref.model_copy(update={"latent_dim": ref.latent_dim or arch.default_latent_dim,
                                  "plugin": plugin})


# ---------------------------------------------------------------------------------------
# Names for the CLI, and nominal sizes


def list_variants() -> list[str]:
    """The presets (``aelab train --model``)."""
    return list(PRESETS)


def list_datasets() -> list[str]:
    """The built-in datasets (``aelab train --dataset``)."""
    return list(DATASETS)


def compression_ratio(latent_dim: int) -> float:
    """*Nominal*: model-space input values (3×32×32) per latent value. Not a measured
    size: a float32 code, or an MNIST image counted as 3,072 values — see the measured
    ``bytes_per_image`` (models.compression)."""
    return INPUT_VALUES / latent_dim


def compression_ratio_bytes(latent_dim: int) -> float:
    """*Nominal*: model-space input bytes (3,072 uint8) per float32 code byte; MNIST's
    native image is 784 bytes. Not measured — see ``bytes_per_image``."""
    return INPUT_VALUES / (4 * latent_dim)

