from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from models.data import load_dataset, to_float
from service.cli import app


def test_short_cli_run_beats_the_mean_training_image(home: Path) -> None:
    out = home / "run"
    result = CliRunner().invoke(app, [
        "train", "--model", "baseline", "--dataset", "synthetic", "--epochs", "4",
        "--train-limit", "2048", "--test-limit", "256", "--no-augment", "--lr", "3e-3",
        "--batch-size", "64", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "epoch   4/4" in result.output
    measures = json.loads((out / "measures.json").read_text())
    data = load_dataset("synthetic", home, train_limit=2048, test_limit=256)
    mean_image = to_float(data.train.images).mean(0, keepdim=True)
    trivial_mse = (to_float(data.test.images) - mean_image).pow(2).mean().item()
    assert measures["mse"] < 0.8 * trivial_mse
    assert measures["params"] == 3_080_629 and measures["latent_dim"] == 1000
    assert Image.open(out / "samples.png").size[0] > 0
    assert (out / "checkpoint.pt").stat().st_size > 1_000_000


def test_cli_names_a_bad_variant(home: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--model", "vae", "--out", str(home / "x")])
    assert result.exit_code == 2
    assert "unknown variant 'vae'" in result.output


def test_cli_reports_missing_dataset_files(home: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--dataset", "cifar10", "--data-root",
                                      str(home / "empty"), "--no-download"])
    assert result.exit_code == 2
    assert "cifar-10-batches-py" in result.output
