"""The web UI's pages: server-rendered from the same repository the API reads.

Every page handler is a few lines: read rows, hand them to a template. Numbers come from
the same functions as the API's (``service.results.rows``, ``repository.list_runs``), so
a page shows exactly what the API answers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from models.catalog import variant_names
from models.datasets import dataset_names
from service import results as table
from service.client.states import Status
from service.context import ContextDep, ServiceContext, SessionsDep, SettingsDep
from service.orchestration.ray_executor import ray_job_url
from service.orchestration.sampling import search_view
from service.persistence import repository as repo
from service.persistence.tables import Experiment, Run
from service.web.auth import page_access
from service.web.format import dataset_title, run_details, run_label, variant_title
from service.web.gallery import GalleryReader
from service.web.parallel import parallel_coordinates
from service.web.render import render
from service.web.scatter import read_scatter, unmeasured_for
from service.web.spec_form import current_sections
from workers.measures import BY_NAME, MEASURES, SUMMARY

router = APIRouter(include_in_schema=False, dependencies=[Depends(page_access)])

PAGE_SIZE = 20
COMPARE_PAGE_SIZE = 50
MAX_COMPARED = 24  # runs in one comparison view (a gallery row and a curve each)

# The study's table: (column, header, fmt_value format, better), from the measures table
# (its study columns, and those the page has room for), then the chosen LR. Measures with a
# better direction get the study's "best value" mark; rate, times and the LR are facts.
STUDY_COLUMNS: tuple[tuple[str, str, str, str | None], ...] = (
    *((m.head, m.title, m.format, m.better) for m in MEASURES if m.study or m.page),
    ("lr", "Chosen LR", "sig", None),
)


# The rate–distortion chart's y axes: (a point's key, its label); a point's PSNR, SSIM and
# accuracy are the decoded images' (q_psnr, …), labelled as the measures table labels them.
RD_METRICS = (("psnr", BY_NAME["psnr"].title), ("psnr_per_image", BY_NAME["psnr_per_image"].title),
              ("ssim", "SSIM"), ("ms_ssim", "MS-SSIM"), ("accuracy", "Classifier accuracy"))


# A run in one line (the comparison's list): (column, header, fmt_value format).
SUMMARY_COLUMNS = tuple((name, BY_NAME[name].title, BY_NAME[name].format)
                        for name, _, _ in SUMMARY)


def _galleries(ctx: ServiceContext) -> GalleryReader:
    return GalleryReader(ctx.artifacts, ctx.tiles)


def _choice(value: str | None, valid: Sequence[str]) -> str | None:
    return value if value in valid else None


class NameFilters:
    """The model and dataset filters of a page: the names the catalog knows and those
    stored runs carry (a composed recipe's, an uninstalled plugin's dataset), as the API's
    filters take them. A name neither knows is kept (it matches nothing) and said."""

    def __init__(self, session: Session, model: str | None, dataset: str | None) -> None:
        stored_models, stored_datasets = repo.stored_names(session)
        self.problems: list[str] = []
        self.model = self._known(model, [*variant_names(), *stored_models], "model",
                                 "a variant (GET /catalog) nor a composed recipe of a stored "
                                 "run")
        self.dataset = self._known(dataset, [*dataset_names(), *stored_datasets], "dataset",
                                   "a dataset here (GET /catalog) nor the dataset of a "
                                   "stored run")
        self.models = self._options(self.model, [*variant_names(), *stored_models],
                                    variant_title)
        self.datasets = self._options(self.dataset, [*dataset_names(), *stored_datasets],
                                      dataset_title)

    def _known(self, value: str | None, known: list[str], what: str, words: str
               ) -> str | None:
        value = (value or "").strip() or None
        if value is not None and value not in known:
            self.problems.append(f"Unknown {what} {value!r}: neither {words}.")
        return value

    @staticmethod
    def _options(chosen: str | None, names: list[str], title: Any) -> list[tuple[str, str]]:
        """(value, label) per name, catalog first; an unknown chosen name last, marked."""
        options = [(n, title(n)) for n in dict.fromkeys(names)]
        if chosen is not None and chosen not in dict(options):
            options.append((chosen, f"{chosen} (unknown)"))
        return options


# --- experiments --------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def experiments_page(
    request: Request, sessions: SessionsDep,
    status: str | None = None, name: Annotated[str | None, Query(max_length=200)] = None,
    model: str | None = None, dataset: str | None = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> Response:
    """Experiments, newest first, with each run's live progress and Ray job."""
    with sessions() as s:
        names = NameFilters(s, model, dataset)
        filters = {"status": _choice(status, [s.value for s in Status]),
                   "name": (name or "").strip() or None, "model": names.model,
                   "dataset": names.dataset}
        page, next_id = repo.list_experiments(
            s, status=Status(filters["status"]) if filters["status"] else None,
            limit=PAGE_SIZE, before_id=int(cursor) if cursor else None, name=filters["name"],
            model=filters["model"], dataset=filters["dataset"])
        runs = repo.runs_of(s, experiment_ids=[e.id for e in page])
    query = {k: v for k, v in filters.items() if v}
    details = {i: d for group in runs.values() for i, d in run_details(group).items()}
    return render(request, "experiments.html", status_code=422 if names.problems else 200,
                  experiments=page, runs=runs, details=details, filters=filters,
                  next_cursor=next_id,
                  query=query, first_page=cursor is None, problems=names.problems,
                  statuses=[s.value for s in Status], variants=names.models,
                  datasets=names.datasets)


def _study_tables(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results rows grouped by dataset, with the original images' accuracy; each row
    carries ``best``, the quality columns where it holds the best value among the models
    (ties all marked; the codec rows matched to their sizes are references, as the
    original images' row is, and are never marked)."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        ds_rows = [{**r, "label": table.row_label(r)} for r in rows if r["dataset"] == dataset]
        models = [r for r in ds_rows if r.get("kind", "model") == "model"]
        best = {}
        for key, _, _, better in STUDY_COLUMNS:
            values = [r[key] for r in models if r[key] is not None]
            if better and values:
                best[key] = min(values) if better == "min" else max(values)
        for r in ds_rows:
            is_model = r.get("kind", "model") == "model"
            r["best"] = {k for k, v in best.items() if is_model and r[k] == v}
        original = next((r["original_accuracy"] for r in ds_rows
                         if r["original_accuracy"] is not None), None)
        out.append({"dataset": dataset, "rows": ds_rows, "original": original})
    return out


# The aggregated table's columns (over seeds): the study's quality measures with error
# bars, then its time.
AGGREGATE_COLUMNS = tuple((m.head, m.title, m.format, m.better) for m in MEASURES
                          if m.study and (m.better is not None or m.group == "time"))


def _bar(mean: float | None, std: float | None, lo: float, hi: float
         ) -> dict[str, float] | None:
    """An error bar's geometry in percent of the column's span [lo, hi]: the mean's
    position and the left edge and width of mean ± std (clipped to the span)."""
    if mean is None or not math.isfinite(mean) or hi <= lo:
        return None
    spread = std if std is not None and math.isfinite(std) else 0.0

    def pos(v: float) -> float:
        return round(100 * min(max((v - lo) / (hi - lo), 0.0), 1.0), 2)

    left, right = pos(mean - spread), pos(mean + spread)
    return {"mean": pos(mean), "left": left, "width": round(right - left, 2)}


def _aggregate_tables(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Aggregated rows (``results.aggregate``) per dataset, each quality cell with its
    error bar drawn on a scale shared by the column within the dataset."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        ds_rows = [{**r, "label": table.row_label(r, latent_shown=True)} for r in rows
                   if r["dataset"] == dataset]
        bars: list[dict[str, Any]] = [{} for _ in ds_rows]
        for key, _, _, better in AGGREGATE_COLUMNS:
            if better is None:
                continue
            ends = [v for r in ds_rows if r[f"{key}_mean"] is not None
                    for v in (r[f"{key}_mean"] - (r[f"{key}_std"] or 0.0),
                              r[f"{key}_mean"] + (r[f"{key}_std"] or 0.0)) if math.isfinite(v)]
            if not ends:
                continue
            lo, hi = min(ends), max(ends)
            for i, r in enumerate(ds_rows):
                bars[i][key] = _bar(r[f"{key}_mean"], r[f"{key}_std"], lo, hi)
        out.append({"dataset": dataset, "rows": list(zip(ds_rows, bars, strict=True))})
    return out


def _experiment(session: Session, experiment_id: int) -> Experiment:
    return repo.get_experiment(session, experiment_id=experiment_id)


@router.get("/experiments/{experiment_id}", response_class=HTMLResponse)
def experiment_page(request: Request, sessions: SessionsDep, experiment_id: int) -> Response:
    """One experiment: its runs' progress and the study's table per dataset."""
    with sessions() as s:
        experiment = _experiment(s, experiment_id)
        spec = table.parse_spec(experiment.spec)
        built = table.build(repo.results(s, experiment_id=experiment_id), "", spec,
                            codecs=repo.codec_results(s, experiment_id=experiment_id,
                                                      kind="matched"))
        view = search_view(s, experiment_id=experiment_id, spec=experiment.spec)
    rows = built.rows
    seeds = len(spec.seed_values) if spec is not None else 1
    aggregated = table.aggregate(rows, spec) if seeds > 1 else []
    return render(request, "experiment.html", experiment=experiment, runs=experiment.runs,
                  details=run_details(experiment.runs),
                  tables=_study_tables(rows), columns=STUDY_COLUMNS,
                  aggregated=_aggregate_tables(aggregated), agg_columns=AGGREGATE_COLUMNS,
                  reference=built.reference, expect=built.expect,
                  has_expect="expect" in built.columns, sweep=built.sweep,
                  notes=built.notes,
                  search=view, parallel=parallel_coordinates(view),
                  exports=[(f, f"/api/v1/experiments/{experiment_id}/results?format={f}")
                           for f in table.FORMATS])


def _datasets(experiment: Experiment) -> list[str]:
    """The experiment's datasets, in its runs' order (a page's dataset tabs)."""
    return list(dict.fromkeys(r.dataset for r in experiment.runs))


def _dataset_of(experiment: Experiment, dataset: str | None) -> str:
    datasets = _datasets(experiment)
    return dataset if dataset in datasets else datasets[0]


@router.get("/experiments/{experiment_id}/gallery", response_class=HTMLResponse)
def experiment_gallery(request: Request, ctx: ContextDep, experiment_id: int,
                       dataset: str | None = None) -> Response:
    """The aligned reconstruction gallery of one dataset of an experiment."""
    with ctx.sessions() as s:
        experiment = _experiment(s, experiment_id)
        chosen = _dataset_of(experiment, dataset)
        runs = [r for r in experiment.runs if r.dataset == chosen]
        gallery = _galleries(ctx).compose(s, runs, {}, chosen)  # one experiment: no names
    return render(request, "gallery.html", experiment=experiment, dataset=chosen,
                  datasets=_datasets(experiment),
                  gallery=gallery)


def _history(session: Session, run_ids: Sequence[int]) -> list[Run]:
    run_ids = [i for i in run_ids if 1 <= i <= repo.MAX_ID]  # others name no row
    query = select(Run).where(Run.id.in_(list(run_ids))).options(
        selectinload(Run.epochs), selectinload(Run.lr_trials), selectinload(Run.experiment))
    by_id = {r.id: r for r in session.scalars(query)}
    return [by_id[i] for i in run_ids if i in by_id]


def curves_data(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """What the charts plot, per run: epochs (with phases) and LR-search trials; each
    run labelled with what tells it from the others (``format.run_details``)."""
    details = run_details(runs)
    return [{
        "id": r.id, "label": run_label(r, details[r.id]), "model": r.model,
        "status": r.status.value,
        "lr": r.lr,
        "epochs": [{"epoch": e.epoch, "phase": e.phase, "size": e.size, "lr": e.lr,
                    "train_loss": e.train_loss, "val_loss": e.val_loss, "val_mse": e.val_mse,
                    "val_mae": e.val_mae,
                    "gpu_utilization_percent": e.gpu_utilization_percent,
                    "gpu_memory_peak_mib": e.gpu_memory_peak_mib} for e in r.epochs],
        "trials": [{"method": t.method, "lr": t.lr, "loss": t.loss,
                    "iterations": t.iterations, "stopped_early": t.stopped_early,
                    "chosen": t.chosen} for t in r.lr_trials],
    } for r in runs]


@router.get("/experiments/{experiment_id}/curves", response_class=HTMLResponse)
def experiment_curves(request: Request, sessions: SessionsDep, experiment_id: int,
                      dataset: str | None = None) -> Response:
    """Learning curves and LR searches of one dataset's runs of an experiment."""
    with sessions() as s:
        experiment = _experiment(s, experiment_id)
        chosen = _dataset_of(experiment, dataset)
        runs = _history(s, [r.id for r in experiment.runs if r.dataset == chosen])
        data = curves_data(runs)
    return render(request, "curves.html", experiment=experiment, dataset=chosen,
                  datasets=_datasets(experiment),
                  curves=data)


@router.get("/experiments/{experiment_id}/rate_distortion", response_class=HTMLResponse)
def experiment_rate_distortion(request: Request, sessions: SessionsDep, experiment_id: int,
                               dataset: str | None = None) -> Response:
    """One dataset's rate–distortion chart: the API's series (models and codec curves)."""
    with sessions() as s:
        experiment = _experiment(s, experiment_id)
        chosen = _dataset_of(experiment, dataset)
        series = table.rate_distortion(
            repo.results(s, experiment_id=experiment_id),
            repo.codec_results(s, experiment_id=experiment_id, kind="curve"))
    series = [x for x in series if x["dataset"] == chosen]
    # Under the chart: each model's BD-rate / BD-PSNR against each codec curve shown.
    anchors = [(x["name"], x["title"]) for x in series if x["kind"] == "codec"]
    deltas = {name: {x["name"]: x["bd"] for x in table.with_bd(series, name)
                     if x["kind"] == "model"} for name, _ in anchors}
    bd_rows = [{"title": x["title"], "deltas": [deltas[name][x["name"]] for name, _ in anchors]}
               for x in series if x["kind"] == "model"]
    series = [{**x, "points": [{k: table.finite_or_token(v) for k, v in p.items()}
                               for p in x["points"]]} for x in series]
    return render(request, "rate_distortion.html", experiment=experiment, dataset=chosen,
                  datasets=_datasets(experiment),
                  series=series, anchors=anchors, bd_rows=bd_rows, metrics=RD_METRICS)


# --- compare across experiments --------------------------------------------------------------


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request, sessions: SessionsDep,
    experiment: Annotated[str | None, Query(max_length=18)] = None,
    model: str | None = None, dataset: str | None = None, status: str | None = None,
    latent_dim: Annotated[str | None, Query(max_length=6)] = None,
    order_by: str = "-id", cursor: Annotated[str | None, Query(max_length=300)] = None,
) -> Response:
    """Runs across experiments (GET /runs's filters and orders), to pick for a view."""
    orders = [o for key in repo.RUN_ORDERS for o in (key, f"-{key}")]
    error = None
    rows: list[tuple[Run, Any, str]] = []
    next_cursor = None
    with sessions() as s:
        names = NameFilters(s, model, dataset)
        filters = {
            "experiment": experiment if experiment and experiment.isdigit() else None,
            "model": names.model, "dataset": names.dataset,
            "status": _choice(status, [s.value for s in Status]),
            "latent_dim": latent_dim if latent_dim and latent_dim.isdigit() else None,
            "order_by": order_by if order_by in orders else "-id",
        }
        try:
            rows, next_cursor = repo.list_runs(
                s, experiment_ids=[int(filters["experiment"])] if filters["experiment"] else (),
                models=[filters["model"]] if filters["model"] else (),
                datasets=[filters["dataset"]] if filters["dataset"] else (),
                statuses=[Status(filters["status"])] if filters["status"] else (),
                latent_dims=[int(filters["latent_dim"])] if filters["latent_dim"] else (),
                order_by=filters["order_by"] or "-id", limit=COMPARE_PAGE_SIZE, cursor=cursor)
        except repo.BadCursor as exc:
            error = str(exc)
    query = {k: v for k, v in filters.items() if v and not (k == "order_by" and v == "-id")}
    return render(request, "compare.html", status_code=422 if names.problems else 200,
                  rows=rows, details=run_details([run for run, _, _ in rows]),
                  filters=filters, query=query, problems=names.problems,
                  next_cursor=next_cursor, error=error, orders=orders, variants=names.models,
                  datasets=names.datasets, statuses=[s.value for s in Status],
                  max_compared=MAX_COMPARED, first_page=cursor is None,
                  summary=SUMMARY_COLUMNS)


@router.get("/compare/view", response_class=HTMLResponse)
def compare_view(request: Request, ctx: ContextDep,
                 runs: Annotated[list[int] | None, Query()] = None) -> Response:
    """One gallery and one set of curves for a selection of runs of one dataset."""
    ids = list(dict.fromkeys(runs or []))[:MAX_COMPARED]
    with ctx.sessions() as s:
        selected = _history(s, ids)
        datasets = sorted({r.dataset for r in selected})
        problem = None
        if not selected:
            problem = "Pick at least one run."
        elif len(datasets) > 1:
            problem = (f"A gallery compares one dataset's test images: these runs are on "
                       f"{', '.join(datasets)}. Pick runs of one dataset.")
        gallery = data = None
        if problem is None:
            names = {r.experiment_id: r.experiment.name for r in selected}
            gallery = _galleries(ctx).compose(s, selected, names, datasets[0])
            data = curves_data(selected)
    status = 200 if problem is None else 400
    return render(request, "compare_view.html", status_code=status, runs=selected,
                  problem=problem, gallery=gallery, curves=data,
                  dataset=datasets[0] if datasets else None, truncated=len(runs or []) > len(ids))


# --- one run ------------------------------------------------------------------------------


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, ctx: ContextDep, run_id: int) -> Response:
    """A run: progress, measures, its reconstructions, its codes' PCA, epochs, LR search,
    spec, files, log."""
    with ctx.sessions() as s:
        run = repo.get_run(s, run_id=run_id, detail=True)
        gallery = _galleries(ctx).compose(s, [run], {}, run.dataset)
        data = curves_data([run])
        scatter, no_scatter = read_scatter(s, ctx.artifacts, run)
    dashboard = ctx.dashboard_url()
    return render(request, "run.html", run=run, gallery=gallery, curves=data,
                  ray_job=ray_job_url(dashboard, run.ray_job_id),
                  spec_json=json.dumps(run.spec, indent=2, sort_keys=True),
                  measures=measure_rows(run), scatter=scatter, no_scatter=no_scatter,
                  gpu=used_a_gpu(run))


def used_a_gpu(run: Run) -> bool:
    """Whether any epoch of the run recorded GPU use (its page then plots it)."""
    return any(e.gpu_utilization_percent is not None or e.gpu_memory_peak_mib is not None
               for e in run.epochs)


def measure_rows(run: Run) -> list[tuple[str, str, Any, str | None]]:
    """The run's measures as (label, format, value, why) rows: every measure of the table;
    ``why`` says why a null one was not measured (``service.spec.unmeasured`` under the
    run's spec: no labels, no classifier, images evaluated whole, too few test images,
    too small for MS-SSIM), or that it was not (a measure newer than the run, one its
    variant has not: the measure's description says which), None for a value."""
    if run.measures is None:
        return []
    lacking = {name: u.reason for u in unmeasured_for(run) for name in u.measures}
    rows: list[tuple[str, str, Any, str | None]] = []
    for m in MEASURES:
        value = getattr(run.measures, m.name)
        why = None if value is not None else \
            f"not measured: {lacking[m.name]}" if m.name in lacking else \
            f"not measured for this run ({m.description})"
        rows.append((m.long_title, m.format, value, why))
    return rows


# --- a new experiment -------------------------------------------------------------------------


def _examples() -> dict[str, Any]:
    study = json.loads(files("service").joinpath("examples/study.json").read_text())
    small = {"name": "first try", "models": ["baseline", "pixel_shuffle"],
             "datasets": ["synthetic"], "epochs": 4, "pretrained": False,
             "data": {"train_limit": 2000, "test_limit": 500},
             "lr_search": {"method": "tune", "num_samples": 4, "budget_epochs": 1},
             "classifier": {"arch": "small", "frozen_epochs": 2, "unfrozen_epochs": 0,
                            "pretrained": False}}
    return {"small": small, "study": study}


@router.get("/new", response_class=HTMLResponse)
def new_experiment(request: Request, settings: SettingsDep) -> Response:
    """The spec editor: validates with dry_run as you type, submits with the token."""
    return render(request, "new.html", sections=current_sections(),
                  writes_protected=settings.api_token is not None, examples=_examples())


@router.get("/experiments", include_in_schema=False)
def experiments_redirect() -> RedirectResponse:
    """``/experiments`` is the list at ``/``."""
    return RedirectResponse("/", status_code=308)
