"""/experiments: create, follow, cancel, delete, results."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from models.catalog import Recipe, resolve
from models.datasets import dataset_info, split_sizes
from service import results as table
from service.api.deps import ReadAccess, WriteAccess
from service.api.views import experiment_item, experiment_out
from service.caches import ended_version
from service.client.schemas import (
    CompressAIResult,
    DryRun,
    ExperimentOut,
    ExperimentPage,
    RateDistortion,
    ResultFormat,
    ResultsTable,
)
from service.context import ContextDep, SessionsDep
from service.http_errors import errors
from service.orchestration.sampling import propose_for, search_view
from service.persistence import repository as repo
from service.persistence.artifacts import remove_tree
from service.persistence.db import transaction
from service.persistence.tables import Status
from service.settings import Settings, run_storage_key
from service.spec import ExperimentSpec
from workers import lr_search
from workers.preflight import requirements
from workers.spec import CodecName, RunSpec, StoredName, VariantName, data_limit_problems

router = APIRouter(prefix="/experiments", tags=["experiments"])


def _check_limits(spec: ExperimentSpec, settings: Settings) -> None:
    """What the spec alone cannot know: this deployment's limits and each dataset's size
    (for dry runs and real POSTs alike). Raises a 422 naming each field."""
    errors: list[dict[str, Any]] = []
    for dataset in spec.datasets:
        for loc, msg in data_limit_problems(spec.data, dataset_info(dataset), spec.batch_size):
            given: Any = spec
            for part in loc:
                given = getattr(given, part)
            errors.append({"type": "value_error", "loc": ("body", *loc), "msg": msg,
                           "input": given})
    if errors:
        raise RequestValidationError(errors)
    runs = spec.run_count
    if runs > settings.max_runs_per_experiment:
        errors.append({"type": "too_many_runs", "loc": ("body", "models"),
                       "msg": f"{runs} runs ({spec.grid_text()}) exceed the limit of "
                              f"{settings.max_runs_per_experiment}", "input": spec.models})
    if spec.epochs > settings.max_epochs:
        errors.append({"type": "less_than_equal", "loc": ("body", "epochs"),
                       "msg": f"epochs must be at most {settings.max_epochs}",
                       "input": spec.epochs})
    searched = spec.search.space.get("epochs") if spec.search is not None else None
    if searched is not None and max(searched.endpoints()) > settings.max_epochs:
        errors.append({"type": "less_than_equal", "loc": ("body", "search", "space", "epochs"),
                       "msg": f"searched epochs must be at most {settings.max_epochs}",
                       "input": max(searched.endpoints())})
    if errors:
        raise RequestValidationError(errors)


def train_images(run: RunSpec) -> int:
    """Training images of a run (after the hold-out split: ``split_sizes``)."""
    return split_sizes(dataset_info(run.dataset).train_size, run.data.train_limit,
                       run.data.validation)[0]


def estimate(spec: ExperimentSpec) -> dict[str, float | int]:
    """Epochs and images the experiment will process: a rough size, not a time."""
    runs = spec.run_specs()
    # A search's runs: each base spec num_samples times (at the base's epochs and batch,
    # whatever the samples draw: a size, not a promise).
    times = spec.search.num_samples if spec.search is not None else 1
    runs = [run for run in runs for _ in range(times)]
    search_epochs = 0.0
    total_images = 0
    for run in runs:
        n = train_images(run)
        per_run = lr_search.estimate(run, n)
        search_epochs += per_run["lr_search_epochs"]
        total_images += round((run.epochs + per_run["lr_search_epochs"]) * n)
    classifier_epochs = (spec.classifier.frozen_epochs + spec.classifier.unfrozen_epochs) \
        * len(spec.datasets) if spec.classifier.enabled else 0
    return {"runs": len(runs), "train_epochs": sum(r.epochs for r in runs),
            "lr_search_epochs": round(search_epochs, 2),
            "classifier_epochs": classifier_epochs, "images_processed": total_images}


def needs(spec: ExperimentSpec, settings: Settings) -> list[dict[str, Any]]:
    """Files the experiment's runs need, as seen from this (API) host."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for run in spec.run_specs():
        for r in requirements(run, data_root=settings.data_path,
                              weights_dir=settings.weights_path):
            found[(r.kind, r.name)] = {"kind": r.kind, "name": r.name, "purpose": r.purpose,
                                       "files": list(r.files), "folder": r.folder,
                                       "present": r.present, "problem": r.problem}
    return list(found.values())


def refuse_unknown_names(session: Any, *, models: list[str], datasets: list[str],
                         each: bool = False) -> None:
    """A 422 at ``("query", "model")`` (``+ (i,)`` with ``each``) for each model that is
    neither a catalog variant nor the variant (e.g. a composed recipe's name) of a stored
    run, and likewise at ``dataset`` for each dataset that is neither one of this
    deployment's nor the dataset of a stored run (e.g. an uninstalled plugin's)."""
    errors = []
    for field, names, unknown, what in (
            ("model", models, repo.unknown_models(session, names=models),
             "neither a variant (GET /catalog) nor a composed recipe of a stored run"),
            ("dataset", datasets, repo.unknown_datasets(session, names=datasets),
             "neither a dataset here (GET /catalog) nor the dataset of a stored run")):
        errors += [{"type": "value_error",
                    "loc": ("query", field, names.index(n)) if each else ("query", field),
                    "msg": f"unknown {field} {n!r}: {what}", "input": n} for n in unknown]
    if errors:
        raise RequestValidationError(errors)


def _axes(recipe: Recipe) -> dict[str, Any]:
    """What makes a recipe the recipe it is: every field but the server-filled plugin."""
    return recipe.model_dump(mode="json", exclude={"plugin"})


def refuse_redefined_recipes(session: Any, spec: ExperimentSpec) -> None:
    """A 422 at ``models[i].name`` for each composed recipe whose name stored runs
    already carry with another recipe: one name, one recipe, in every experiment (the
    same recipe under the same name is welcome)."""
    composed = {i: resolve(m) for i, m in enumerate(spec.models) if isinstance(m, Recipe)}
    stored = repo.stored_recipes(session, names=[r.name for r in composed.values()])
    errors = []
    for i, recipe in composed.items():
        if recipe.name not in stored:
            continue
        try:
            known = _axes(Recipe.model_validate(stored[recipe.name]))
        except ValidationError:
            known = {k: v for k, v in stored[recipe.name].items() if k != "plugin"}
        if known != _axes(recipe):
            given = ", ".join(f"{k}={v}" for k, v in known.items() if k != "name")
            errors.append({"type": "recipe_redefined", "loc": ("body", "models", i, "name"),
                           "msg": f"{recipe.name!r} names another recipe in stored runs "
                                  f"({given}): give that recipe, or another name",
                           "input": recipe.name})
    if errors:
        raise RequestValidationError(errors)


def _links(*targets: tuple[str, str, str]) -> dict[str, Any]:
    return {name: {"operationId": op, "parameters": {param: "$response.body#/id"}}
            for name, op, param in targets}


CREATED_LINKS = {
    **_links(("GetExperiment", "get_experiment", "experiment_id"),
             ("GetResults", "get_results", "experiment_id"),
             ("CancelExperiment", "cancel_experiment", "experiment_id"),
             ("DeleteExperiment", "delete_experiment", "experiment_id")),
    "GetRun": {"operationId": "get_run", "parameters": {"run_id": "$response.body#/runs/0/id"}},
    "GetRunLogs": {"operationId": "get_run_logs",
                   "parameters": {"run_id": "$response.body#/runs/0/id"}},
}


def same_spec(stored: dict[str, Any], spec: ExperimentSpec) -> bool:
    """Whether a stored experiment's spec is ``spec``, read as today's model reads it: one
    stored before a field with a default existed (``precision``) is the same spec."""
    given = spec.model_dump(mode="json")
    if stored == given:
        return True
    try:
        return ExperimentSpec.model_validate(stored, context={"stored": True}).model_dump(
            mode="json") == given
    except ValidationError:  # no longer a valid spec at all (a plugin gone, say)
        return False


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[WriteAccess],
             operation_id="create_experiment", response_model=ExperimentOut | DryRun,
             responses={200: {"description": "a dry run, or the replay of an "
                                             "Idempotency-Key"},
                        201: {"description": "created", "links": CREATED_LINKS},
                        **errors(400, 413)})
def create_experiment(
    ctx: ContextDep, response: Response,
    spec: Annotated[ExperimentSpec, Body()],
    dry_run: Annotated[bool, Query(description="validate and estimate only")] = False,
    idempotency_key: Annotated[str | None, Header(
        min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
        description="makes retries safe: the same key and spec answer the first "
                    "experiment (200); the same key with another spec is a 422")] = None,
) -> Any:
    settings, sessions = ctx.settings, ctx.sessions
    _check_limits(spec, settings)
    with sessions() as s:
        refuse_redefined_recipes(s, spec)

    def key_reused(existing: Any) -> RequestValidationError | None:
        # The IETF Idempotency-Key draft: a key reused for another request is an error.
        if same_spec(existing.spec, spec):
            return None
        return RequestValidationError([{
            "type": "idempotency_key_reused", "loc": ("header", "idempotency-key"),
            "msg": f"Idempotency-Key {idempotency_key!r} was used for experiment "
                   f"{existing.id} with a different spec; use a new key",
            "input": idempotency_key}])

    if dry_run:  # never accepts what the real POST would refuse, the key included
        if idempotency_key:
            with sessions() as s:
                existing = repo.get_by_idempotency_key(s, key=idempotency_key)
            if existing is not None and (refused := key_reused(existing)):
                raise refused
        response.status_code = status.HTTP_200_OK
        required = needs(spec, settings)
        if spec.search is not None:  # a search: its pairs, their samples, its space
            search = spec.search
            runs = [{"model": r.model, "dataset": r.dataset, "samples": search.num_samples}
                    for r in spec.run_specs()]
            searched = {"algorithm": search.algorithm, "metric": search.metric,
                        "mode": search.mode, "pruner": search.pruner,
                        "num_samples": search.num_samples,
                        "max_concurrent": search.concurrency, "runs": spec.run_count,
                        "space": search.describe()}
        else:
            runs = [{"model": r.model, "dataset": r.dataset,
                     "latent_dim": r.effective_latent_dim, "seed": r.seed}
                    for r in spec.run_specs()]
            searched = None
        return DryRun(spec=spec.model_dump(mode="json"), runs=runs, search=searched,
                      estimate=estimate(spec), needs=required,
                      missing=[n for n in required if not n["present"]])

    def replay(existing: Any) -> Any:
        if refused := key_reused(existing):
            raise refused
        response.status_code = status.HTTP_200_OK
        out = experiment_out(existing, ctx.dashboard_url())
        with sessions() as s:  # a search's state, as GET answers it
            out.search = search_view(s, experiment_id=existing.id, spec=existing.spec)
        return out

    if idempotency_key:
        with sessions() as s:
            existing = repo.get_by_idempotency_key(s, key=idempotency_key)
        if existing is not None:
            return replay(existing)
    try:
        with transaction(sessions) as s:
            experiment = repo.create_experiment(s, spec=spec, idempotency_key=idempotency_key)
            if spec.search is not None:  # its first samples, in the same transaction
                propose_for(s, experiment, spec)
            body = experiment_out(experiment, ctx.dashboard_url())
            # A search's state (planned runs, first samples), as GET answers it.
            body.search = search_view(s, experiment_id=experiment.id, spec=experiment.spec)
    except IntegrityError:  # the same key raced us: answer as the winner's replay
        with sessions() as s:
            existing = repo.get_by_idempotency_key(s, key=idempotency_key or "")
        if existing is None:
            raise
        return replay(existing)
    ctx.wake()
    response.headers["Location"] = body.links["self"]
    return body


@router.get("", response_model=ExperimentPage, dependencies=[ReadAccess],
            operation_id="list_experiments")
def list_experiments(
    ctx: ContextDep,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    name: Annotated[str | None, Query(max_length=200, description="part of the name")] = None,
    model: Annotated[VariantName | None,  # type: ignore[valid-type]
                     Query(description="has a run of it")] = None,
    dataset: Annotated[StoredName | None,  # type: ignore[valid-type]
                       Query(description="has a run on it")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> Response:
    """Newest first, filtered; pass ``next`` as ``cursor`` for older ones."""
    ended = ctx.ended
    with ctx.sessions() as session:
        refuse_unknown_names(session, models=[model] if model else [],
                             datasets=[dataset] if dataset else [])
        page, next_id = repo.list_experiments(session, status=status_, limit=limit,
                                              before_id=int(cursor) if cursor else None,
                                              name=name, model=model, dataset=dataset)
        # Runs of an ended experiment are counted once; the rest on every read.
        versions = {e.id: ended_version(e.status, e.finished_at) for e in page}
        counts = {i: c for i, v in versions.items()
                  if (c := ended.get(("counts", i), v)) is not None}
        if missing := [e.id for e in page if e.id not in counts]:
            counts |= repo.run_counts(session, experiment_ids=missing)
            for i in missing:
                ended.put(("counts", i), versions[i], counts[i])
    dashboard = ctx.dashboard_url()
    body = ExperimentPage(items=[experiment_item(e, counts[e.id], dashboard) for e in page],
                          next=str(next_id) if next_id is not None else None)
    return Response(body.model_dump_json(), media_type="application/json")


@router.get("/{experiment_id}", response_model=ExperimentOut, dependencies=[ReadAccess],
            operation_id="get_experiment", responses=errors(404))
def get_experiment(ctx: ContextDep, experiment_id: int) -> Response:
    ended = ctx.ended
    dashboard = ctx.dashboard_url()
    key = ("detail", experiment_id, dashboard)
    with ctx.sessions() as session:
        # The experiment's row before its runs': an ended experiment's runs have ended.
        experiment = repo.experiment_summary(session, experiment_id=experiment_id)
        version = ended_version(experiment.status, experiment.finished_at)
        if (body := ended.get(key, version)) is None:
            runs = repo.run_summaries(session, experiment_id=experiment_id)
            out = experiment_out(experiment, dashboard, runs)
            out.search = search_view(session, experiment_id=experiment_id,
                                     spec=repo.experiment_spec(session,
                                                               experiment_id=experiment_id))
            body = out.model_dump_json().encode()
            ended.put(key, version, body)
    return Response(body, media_type="application/json")


@router.post("/{experiment_id}/cancel", response_model=ExperimentOut,
             operation_id="cancel_experiment",
             responses={200: {"description": "cancelled", "links": _links(
                 ("DeleteExperiment", "delete_experiment", "experiment_id"),
                 ("GetExperiment", "get_experiment", "experiment_id"))},
                 **errors(404, 409, 413)},
             dependencies=[WriteAccess])
def cancel_experiment(ctx: ContextDep, experiment_id: int) -> ExperimentOut:
    with transaction(ctx.sessions) as s:
        _, running = repo.request_cancel(s, experiment_id=experiment_id)
    ctx.stop_runs(running)
    with ctx.sessions() as s:
        return experiment_out(repo.get_experiment(s, experiment_id=experiment_id),
                              ctx.dashboard_url())


@router.delete("/{experiment_id}", status_code=status.HTTP_204_NO_CONTENT,
               operation_id="delete_experiment", responses=errors(404, 409, 413),
               dependencies=[WriteAccess])
def delete_experiment(ctx: ContextDep, experiment_id: int) -> Response:
    """Delete a finished experiment: its rows, its runs' artifacts and their Tune trial
    folders (checkpoints), on local disk or fsspec storage alike."""
    with transaction(ctx.sessions) as s:
        runs = repo.delete_experiment(s, experiment_id=experiment_id)
    for run_id, uid in runs:
        ctx.artifacts.delete_prefix(f"run-{run_id}")
        remove_tree(ctx.settings.tune_storage, run_storage_key(run_id, uid))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{experiment_id}/results", dependencies=[ReadAccess],
            operation_id="get_results",
            responses={200: {"model": ResultsTable,
                             "content": {f.media_type.split(";")[0]: {}
                                         for f in table.FORMATS.values()}},
                       **errors(404)})
def get_results(ctx: ContextDep, experiment_id: int,
                format: ResultFormat = "json",
                aggregate: Annotated[Literal["seed"] | None, Query(
                    description="seed: one row per (model, dataset, latent size) with the "
                                "mean, sample std and n of each measure over its seeds, "
                                "tied-best marked by Welch's t-test")] = None) -> Response:
    fmt = table.FORMATS[format]
    ended = ctx.ended
    key = ("results", experiment_id, format, aggregate)
    with ctx.sessions() as session:
        summary = repo.experiment_summary(session, experiment_id=experiment_id)
        version = ended_version(summary.status, summary.finished_at)
        if (text := ended.get(key, version)) is not None:
            return Response(text, media_type=fmt.media_type)
        experiment = repo.get_experiment(session, experiment_id=experiment_id, with_runs=False)
        built = table.build(repo.results(session, experiment_id=experiment_id),
                            experiment.name, table.parse_spec(experiment.spec), aggregate,
                            codecs=repo.codec_results(session, experiment_id=experiment_id,
                                                      kind="matched"),
                            sizes=repo.size_results(session, experiment_id=experiment_id))
    title = experiment.name or f"Experiment {experiment_id}"
    text = fmt.render(built, title, experiment_id).encode()
    ended.put(key, version, text)
    return Response(text, media_type=fmt.media_type)


@router.get("/{experiment_id}/rate_distortion", dependencies=[ReadAccess],
            operation_id="get_rate_distortion",
            response_model=RateDistortion | list[CompressAIResult],
            responses=errors(404))
def get_rate_distortion(sessions: SessionsDep, experiment_id: int,
                        anchor: Annotated[CodecName | None, Query(
                            description="a codec: each model series gets its BD-rate and "
                                        "BD-PSNR against this codec's curve (bd)")] = None,
                        format: Annotated[Literal["json", "compressai"], Query(
                            description="compressai: a list of result files as "
                                        "compressai.utils.plot reads them, one per "
                                        "series (per-image PSNR)")] = "json"
                        ) -> Any:
    """Per model and dataset its measured points (bpp, PSNR, SSIM, classifier accuracy of
    the images decoded from its stream; one per latent size / λ), and each codec's curve
    over a range of qualities on the same test images; with ``anchor``, each model's
    Bjøntegaard deltas against that codec over the overlapping range."""
    with sessions() as session:
        repo.get_experiment(session, experiment_id=experiment_id, with_runs=False)
        series = table.rate_distortion(repo.results(session, experiment_id=experiment_id),
                                       repo.codec_results(session, experiment_id=experiment_id,
                                                          kind="curve"))
    if format == "compressai":
        return JSONResponse(table.compressai_export(series, experiment_id))
    if anchor is not None:
        series = table.with_bd(series, anchor)
    return RateDistortion(experiment_id=experiment_id, definitions=table.RD_DEFINITIONS,
                          series=series)  # type: ignore[arg-type]
