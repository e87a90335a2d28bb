"""The spec editor's form, derived from the experiment spec's JSON schema.

The form cannot drift from the spec: every field of :class:`service.spec.ExperimentSpec`
(nested option models as fieldsets) becomes one input named by its dotted path, so a 422's
``loc`` (``["body", "lr_search", "min_lr"]``) names the input its message belongs next to.
The server stays the only validator; the form just collects values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal

from models.catalog import DATASETS, VARIANTS
from models.datasets import dataset_info, dataset_names
from models.datasets.folder import folder_names, registered_urls
from models.plugins import PluginUnavailable
from service.spec import ExperimentSpec

# json: a list or mapping typed as JSON text (empty: none), e.g. seeds as [0, 1, 2];
# numbers: a list of numbers typed as "0.001, 0.01" (e.g. lambdas).
Kind = Literal["text", "int", "float", "bool", "choice", "choices", "json", "numbers"]

# Top-level fields shown first, in this order; any other field follows in schema order,
# so a new spec field appears in the form without touching this module.
GENERAL_ORDER = ("name", "models", "datasets", "epochs", "batch_size", "schedule",
                 "precision", "latent_dim", "latent_dims", "pretrained", "gallery_samples",
                 "seed", "seeds", "lambdas", "reference", "expect")
SECTION_TITLES = {"lr_search": "Learning-rate search", "data": "Data",
                  "resources": "Resources per run", "classifier": "Reference classifier",
                  "tolerance": "Tolerance against the study (reference: study)",
                  "compression": "Measured compression",
                  "evaluation": "Evaluation at other sizes"}
# Words of schema titles ("Num Samples", "Gpus Per Run") written as people write them.
WORDS = {"Lr": "LR", "Num": "Number of", "Dim": "size", "Gpus": "GPUs", "Cpus": "CPUs"}


@dataclass(frozen=True)
class Option:
    value: str | int
    label: str


@dataclass(frozen=True)
class FormField:
    """One input of the editor: ``path`` is its dotted place in the spec."""

    path: str
    label: str
    kind: Kind
    default: Any
    nullable: bool = False
    required: bool = False
    description: str = ""
    options: tuple[Option, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    numeric: bool = False  # a choice among numbers: sent as a number, not its text
    # choices whose entries may also be objects (models: recipes composed inline), kept as
    # JSON in a second input beside the checkboxes
    composable: bool = False

    @property
    def dom_id(self) -> str:
        """The input's element id: ``f-lr_search-min_lr``."""
        return "f-" + self.path.replace(".", "-")

    @property
    def hint(self) -> str:
        """Bounds and nullability in words, shown under the input."""
        parts = []
        if self.minimum is not None:
            parts.append(f"{'above' if self.exclusive_minimum else 'at least'} "
                         f"{_num(self.minimum)}")
        if self.maximum is not None:
            parts.append(f"{'below' if self.exclusive_maximum else 'at most'} "
                         f"{_num(self.maximum)}")
        text = ", ".join(parts)
        if self.nullable:
            text += ("; " if text else "") + "empty: none (the default)"
        return text


@dataclass(frozen=True)
class Section:
    path: str  # "" for the top level
    title: str
    fields: list[FormField] = field(default_factory=list)

    @property
    def dom_id(self) -> str:
        """The fieldset's element id."""
        return "s-" + (self.path or "general")


def _num(value: float) -> str:
    return f"{value:g}"


def _label(title: str) -> str:
    """A schema title in sentence case: "Min Lr" → "Min LR", "Latent Dim" → "Latent size"."""
    return " ".join(WORDS.get(w, w if i == 0 else w.lower())
                    for i, w in enumerate(title.split()))


def _option_label(name: str | int) -> str:
    if not isinstance(name, str):
        return str(name)
    if name in VARIANTS:
        return VARIANTS[name].title
    if name in DATASETS:
        return DATASETS[name].title
    return name


def _field(path: str, schema: dict[str, Any], required: bool) -> FormField:
    nullable = False
    body = schema
    if "anyOf" in schema:
        kinds = [s for s in schema["anyOf"] if s.get("type") != "null"]
        nullable = len(kinds) < len(schema["anyOf"])
        body = {**kinds[0], **{k: v for k, v in schema.items() if k != "anyOf"}}
    kind: Kind
    options: tuple[Option, ...] = ()
    if "const" in body:
        body = {**body, "enum": [body["const"]]}
    items = body.get("items", {})
    composable = False
    if "anyOf" in items:  # names or inline objects (models): the names are the choices
        composable = any("$ref" in s or s.get("type") == "object" for s in items["anyOf"])
        body = {**body, "items": next((s for s in items["anyOf"] if "enum" in s), items)}
    if body.get("type") == "array" and "enum" in body.get("items", {}):
        kind = "choices"
        options = tuple(Option(v, _option_label(v)) for v in body["items"]["enum"])
    elif body.get("type") == "array" and body.get("items", {}).get("type") in ("number",
                                                                             "integer"):
        kind = "numbers"
    elif "enum" in body:
        kind = "choice"
        options = tuple(Option(v, _option_label(v)) for v in body["enum"])
    elif body.get("type") in ("array", "object") or "$ref" in body or "anyOf" in body:
        kind = "json"  # an object, a list or a union of them (``search``): written as JSON
    elif body.get("type") == "boolean":
        kind = "bool"
    elif body.get("type") == "integer":
        kind = "int"
    elif body.get("type") == "number":
        kind = "float"
    else:
        kind = "text"
    numeric = kind in ("int", "float")
    minimum = body.get("minimum", body.get("exclusiveMinimum")) if numeric else None
    maximum = body.get("maximum", body.get("exclusiveMaximum")) if numeric else None
    return FormField(path=path, label=_label(body.get("title", path)), kind=kind,
                     default=body.get("default"), nullable=nullable, required=required,
                     description=body.get("description", ""), options=options,
                     minimum=minimum, maximum=maximum,
                     exclusive_minimum="exclusiveMinimum" in body,
                     exclusive_maximum="exclusiveMaximum" in body,
                     numeric=kind == "choice" and all(
                         isinstance(o.value, int | float) for o in options),
                     composable=composable and kind == "choices")


def dataset_label(name: str) -> str:
    """A dataset's checkbox label: a built-in's or a plugin's title; a folder dataset's
    name with where it is and its images ("shapes (folder, 8 + 2 images)")."""
    try:
        info = dataset_info(name)
    except (KeyError, PluginUnavailable):
        return name
    if name not in folder_names() or name in DATASETS:
        return info.title
    where = "shared URL" if name in registered_urls() else "folder"
    return f"{name} ({where}, {info.train_size} + {info.test_size} images)"


def current_sections() -> tuple[Section, ...]:
    """:func:`spec_sections` with the dataset choices read now: the built-ins, the
    plugins' and the folders placed (or URLs registered) since the server started."""
    options = tuple(Option(n, dataset_label(n)) for n in dataset_names())
    return tuple(replace(section, fields=[
        replace(f, options=options) if f.path == "datasets" else f
        for f in section.fields]) for section in spec_sections())


@lru_cache(maxsize=1)
def spec_sections() -> tuple[Section, ...]:
    """The editor's sections: the general fields, then one per nested option model."""
    schema = ExperimentSpec.model_json_schema()
    defs = schema.get("$defs", {})
    props: dict[str, Any] = schema["properties"]
    required = set(schema.get("required", ()))
    order = [k for k in GENERAL_ORDER if k in props] + \
        [k for k in props if k not in GENERAL_ORDER]
    general = Section("", "Experiment")
    nested: list[Section] = []
    for key in order:
        prop = props[key]
        if "$ref" in prop:
            model = defs[prop["$ref"].rsplit("/", 1)[1]]
            inner_required = set(model.get("required", ()))
            nested.append(Section(key, SECTION_TITLES.get(key, _label(model.get("title", key))),
                                  [_field(f"{key}.{k}", v, k in inner_required)
                                   for k, v in model["properties"].items()]))
        else:
            general.fields.append(_field(key, prop, key in required))
    return (general, *nested)

