from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
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
    assert (out / "model.pt").stat().st_size > 1_000_000
    history = json.loads((out / "history.json").read_text())
    assert [(h["epoch"], h["phase"], h["size"]) for h in history] == [
        (1, "phase1", 32), (2, "phase1", 32), (3, "phase1", 32), (4, "phase2", 32)]


@pytest.mark.parametrize("option,value,valid", [
    ("--model", "vae", "'baseline', 'pixel_shuffle'"),
    ("--validation", "bogus", "'holdout', 'test'"),
    ("--schedule", "cosine", "'seed', 'one_cycle'"),
    ("--precision", "fp16", "'auto', 'fp32', 'bf16'"),
    ("--lr-search", "grid", "'tune', 'range_test', 'fixed'"),
    ("--dataset", "imagenet", "'mnist', 'cifar10', 'synthetic'"),
])
def test_cli_choices_exit_2_naming_the_valid_values(home: Path, option: str, value: str,
                                                    valid: str) -> None:
    result = CliRunner().invoke(app, ["train", option, value, "--out", str(home / "x")])
    assert result.exit_code == 2
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())  # unwrap rich's box
    assert f"'{value}' is not one of" in text and valid in text
    assert not (home / "x").exists()


def test_cli_tune_needs_a_ray_cluster(home: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--lr-search", "tune", "--out", str(home / "x")])
    assert result.exit_code == 2 and "needs a Ray cluster" in result.output


def test_cli_invalid_spec_values_exit_2_naming_the_field(home: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--train-limit", "3", "--out", str(home / "x")])
    assert result.exit_code == 2 and "data.train_limit" in result.output


def test_cli_reports_missing_dataset_files_before_training(home: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--dataset", "cifar10", "--data-root",
                                      str(home / "empty"), "--no-download",
                                      "--out", str(home / "x")])
    assert result.exit_code == 1
    assert "cifar-10-batches-py" in result.output and "test_batch" in result.output
    assert "PreflightFailed" in result.output and "Traceback" not in result.output
    assert "Traceback" in (home / "x" / "run.log").read_text()  # details go to the log
    assert not (home / "x" / "history.json").exists()  # zero epochs trained


def test_cli_reads_the_services_settings(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AELAB_DATA_ROOT", str(home / "from-settings"))
    monkeypatch.setenv("AELAB_ALLOW_DOWNLOAD", "false")
    result = CliRunner().invoke(app, ["train", "--dataset", "cifar10", "--out", str(home / "x")])
    assert result.exit_code == 1
    assert str(home / "from-settings" / "cifar-10-batches-py") in result.output
    assert "downloads are off" in result.output
