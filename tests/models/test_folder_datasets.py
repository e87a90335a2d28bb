"""Folder datasets, ``photos`` and ``kodak`` as entries of the dataset registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.datasets import dataset_entry, dataset_info, dataset_names
from models.datasets.folder import use_root, use_urls
from tests.utils import image_folder


@pytest.fixture()
def root(tmp_path: Path):
    use_root(tmp_path)
    yield tmp_path
    use_root(None)


def test_an_image_folder_is_a_labelled_dataset_with_its_facts(root: Path) -> None:
    image_folder(root, "shapes", size=(64, 96), train=3, test=2)
    info = dataset_info("shapes")
    assert "shapes" in dataset_names()
    assert (info.num_classes, info.classes, info.channels) == (2, ("circles", "squares"), 3)
    assert (info.native_size, info.train_size, info.test_size) == ((64, 96), 6, 4)
    train, test = dataset_entry("shapes").read(root, download=False)
    assert train.images.shape == (6, 3, 64, 96) and test.images.shape == (4, 3, 64, 96)
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_a_flat_folder_is_unlabelled_and_sizes_may_differ(root: Path) -> None:
    image_folder(root, "flat", size=(40, 50), classes=(), train=2, test=1)
    image_folder(root, "flat", size=(70, 30), classes=(), train=1, test=1, seed=1)
    info = dataset_info("flat")
    assert info.num_classes is None and info.native_size is None
    assert info.size_range == ((40, 30), (70, 50))
    train, _ = dataset_entry("flat").read(root, download=False)
    assert train.labels is None and train.images.shape == (3, 3, 70, 50)
    assert sorted(map(tuple, train.sizes.tolist())) == [(40, 50), (40, 50), (70, 30)]


def test_corrupt_files_and_decompression_bombs_are_named_not_loaded(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    folder = image_folder(root, "broken", classes=(), train=2, test=1)
    bad = folder / "train" / "bad.png"
    good = sorted((folder / "train").glob("train*.png"))[0]
    bad.write_bytes(good.read_bytes()[:200])  # truncated
    check = dataset_entry("broken").check(root)
    assert check.status == "corrupt"
    (problem,) = check.problems  # named by its path in the dataset, without a repr
    assert problem.startswith("train/bad.png is corrupt (") and "0x" not in problem
    bad.unlink()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 96 - 1)  # each image is over it
    check = dataset_entry("broken").check(root)
    assert check.status == "corrupt" and len(check.problems) == 3
    assert all("decompression bomb" in p for p in check.problems)


def test_names_are_names_never_paths(root: Path) -> None:
    image_folder(root, "shapes", train=1, test=1)
    for name in ("../shapes", str(root / "shapes"), "Shapes", "nothing"):
        with pytest.raises(KeyError) as err:
            dataset_info(name)
        assert ("is a path" in err.value.args[0]) == ("/" in name)


def test_photos_come_from_the_installed_scikit_image() -> None:
    entry = dataset_entry("photos")
    assert entry.check(Path("/unused")).status == "available"
    assert "astronaut.png" in entry.info.split
    train, test = entry.read(Path("/unused"), download=False)
    assert (len(train.images), len(test.images)) == (10, 3)
    assert test.sizes.tolist() == [[512, 512], [300, 451], [400, 600]]
    assert test.images.shape == (3, 3, 512, 600)


def test_kodak_checks_each_placed_file_and_its_size(tmp_path: Path) -> None:
    from PIL import Image

    entry = dataset_entry("kodak")
    assert entry.check(tmp_path).status == "missing"
    (tmp_path / "kodak").mkdir()
    Image.new("RGB", (100, 80)).save(tmp_path / "kodak" / "kodim01.png")
    check = entry.check(tmp_path)
    assert check.status == "corrupt"
    assert "kodim01.png is 80×100 (H×W), not 512×768 or 768×512" in check.problems[0]
    assert len(check.problems) == 24  # and the 23 missing


@pytest.fixture()
def remote(tmp_path: Path):
    """A folder dataset uploaded to an fsspec memory:// URL, registered as ``remote``;
    the same folder also under the local root as ``shapes``."""
    import uuid

    import fsspec

    use_root(tmp_path)
    folder = image_folder(tmp_path, "shapes", size=(40, 48), train=2, test=1)
    fs = fsspec.filesystem("memory")
    base = f"/aelab-{uuid.uuid4().hex[:8]}"
    fs.put(str(folder), f"{base}/shapes", recursive=True)
    url = f"memory://{base.lstrip('/')}/shapes"
    use_urls({"remote": url})
    yield url, fs, f"{base}/shapes"
    use_urls(None)
    use_root(None)
    fs.rm(base, recursive=True)


def test_a_folder_at_an_fsspec_url_is_a_dataset_read_through_fsspec(remote) -> None:
    url, fs, path = remote
    assert {"remote", "shapes"} <= set(dataset_names())
    info = dataset_info("remote")
    assert (info.train_size, info.test_size, info.classes) == (4, 2, ("circles", "squares"))
    assert info.native_size == (40, 48) and f"at the registered URL {url}" in info.description
    train, test = dataset_entry("remote").read(Path("/unused"), download=False)
    local_train, local_test = dataset_entry("shapes").read(Path("/unused"), download=False)
    assert (train.images == local_train.images).all()  # the same bytes, decoded the same
    assert train.labels.tolist() == local_train.labels.tolist() == [0, 0, 1, 1]
    assert (test.images == local_test.images).all()
    # a file changed at the URL is seen (the survey's cache is keyed by fsspec's ukey)
    bad = f"{path}/test/squares/test1_0_000.png"
    fs.pipe(bad, b"\x89PNG\r\n\x1a\n not really")
    check = dataset_entry("remote").check(Path("/unused"))
    assert check.status == "corrupt"
    assert check.problems[0] == ("test/squares/test1_0_000.png is not a readable image "
                                 "(Pillow cannot identify it as an image)")


def test_a_registered_url_that_is_not_there_is_missing_saying_why(remote) -> None:
    use_urls({"gone": "memory://nothing-here/at-all"})
    check = dataset_entry("gone").check(Path("/unused"))
    assert check.status == "missing"
    assert check.problems == ("memory://nothing-here/at-all/train is missing",
                              "memory://nothing-here/at-all/test is missing")


def test_a_url_whose_filesystem_is_not_installed_is_named_unavailable() -> None:
    import fsspec

    for protocol in ("s3", "gs", "abfs", "hf", "oci"):
        try:
            fsspec.get_filesystem_class(protocol)
        except ImportError:
            break
    else:
        pytest.skip("every remote filesystem tried is installed here")
    use_urls({"faraway": f"{protocol}://key:secret@bucket/shapes"})
    try:
        check = dataset_entry("faraway").check(Path("/unused"))
        info = dataset_info("faraway")
    finally:
        use_urls(None)
    assert check.status == "missing"
    assert check.problems[0].startswith(f"{protocol}://bucket/shapes cannot be read here")
    assert "secret" not in check.problems[0] + info.description  # credentials never shown


def test_16_bit_greyscale_is_scaled_to_8_bits_not_clipped(root: Path) -> None:
    """A 16-bit PNG (Pillow's "I;16") is read as round(v / 257), so 0..65535 spans 0..255;
    Pillow's own convert("L") would clip every value above 255 to white. The big-endian
    and 32-bit modes a TIFF or an older Pillow gives are scaled alike."""
    import numpy as np
    from PIL import Image

    from models.datasets.folder import eight_bit

    values = (np.arange(16 * 16, dtype=np.int64).reshape(16, 16) * 257 + 100).clip(0, 65535)
    expected = np.round(values / 257).astype(np.uint8)
    for split in ("train", "test"):
        (root / "deep" / split).mkdir(parents=True)
        Image.frombytes("I;16", (16, 16), values.astype("<u2").tobytes()).save(
            root / "deep" / split / "scan.png")
    assert Image.open(root / "deep" / "train" / "scan.png").mode == "I;16"
    assert dataset_info("deep").channels == 1
    train, _ = dataset_entry("deep").read(root, download=False)
    assert train.images.shape == (1, 1, 16, 16)
    assert (train.images[0, 0] == expected).all()
    for im in (Image.frombytes("I;16B", (16, 16), values.astype(">u2").tobytes()),
               Image.fromarray(values.astype(np.int32))):  # mode "I"
        out = eight_bit(im)
        assert out.mode == "L" and (np.asarray(out) == expected).all(), im.mode


def test_unreadable_files_are_named_in_plain_text_without_reprs(tmp_path: Path) -> None:
    """Pillow's messages embed reprs (``cannot identify image file PosixPath('…')``,
    ``<_io.BytesIO object at 0x…>``): a problem names the file as it is asked to."""
    from models.datasets.folder import local_place, open_image

    bad = tmp_path / "it's.png"
    bad.write_bytes(b"not an image")
    for path in (bad, local_place(bad)):
        with pytest.raises(ValueError) as err:
            open_image(path, "train/it's.png")
        assert str(err.value) == ("train/it's.png is not a readable image (Pillow cannot "
                                  "identify it as an image)")
    with pytest.raises(ValueError) as err:
        open_image(tmp_path / "gone.png")
    assert str(err.value) == f"{tmp_path / 'gone.png'} is not a readable image (No such " \
        "file or directory)"


def test_padding_that_would_blow_memory_up_is_refused_naming_the_sizes(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A split loads as one uint8 tensor (N, C, Hmax, Wmax): a 200×30 and a 30×200 image
    beside 30×30 ones pad every slot to 200×200 (11.6× the real pixels) — refused by the
    check and by preflight, saying what to do; the photos' 3.8× passes."""
    from models.datasets import folder as folder_module
    from models.datasets.folder import PADDED_WASTE, padding_problems
    from service.spec import ExperimentSpec
    from tests.utils import tiny_spec
    from workers.preflight import PreflightFailed, preflight

    image_folder(root, "odd", size=(30, 30), classes=(), train=2, test=1)
    image_folder(root, "odd", size=(200, 30), classes=(), train=1, test=0, seed=1)
    image_folder(root, "odd", size=(30, 200), classes=(), train=1, test=0, seed=2)
    message = ("dataset odd: its train split of 4 images from 30×30 to 200×200 (H×W) loads "
               "as one tensor padded to the largest, 4×3×200×200 (11.6× its real pixels, "
               "over the 4× limit), whatever data.crop; cut the large images into tiles "
               "about the size of the others (or resize them) before placing them, or move "
               "them out (the largest: train/train0_1_000.png, 200×30)")
    assert PADDED_WASTE < 4 * 200 * 200 / (2 * 30 * 30 + 2 * 200 * 30)
    check = dataset_entry("odd").check(root)
    assert (check.status, check.problems) == ("unusable", (message,))
    (spec,) = ExperimentSpec.model_validate(
        tiny_spec(datasets=["odd"], batch_size=2, data={"test_limit": 1,
                                                         "validation": "test"})).run_specs()
    with pytest.raises(PreflightFailed) as err:
        preflight(spec, data_root="/unused", weights_dir=str(root / "w"),
                  allow_download=False)
    assert str(err.value) == f"missing or unusable on this node: {message}."
    photos = [(str(i), tuple(s)) for i, s in enumerate(
        dataset_entry("photos").read(Path("/unused"), download=False)[0].sizes.tolist())]
    assert padding_problems("photos", {"train": photos}, 3) == []
    # The byte limit: 2 GiB of padded uint8, whatever the waste.
    monkeypatch.setattr(folder_module, "PADDED_LIMIT_BYTES", 3 * 30 * 30 * 4 - 1)
    (problem,) = padding_problems("even", {"test": [("test/a.png", (30, 30))] * 4}, 3)
    assert "4×3×30×30 (10.5 KiB, over the 10.5 KiB limit)" in problem
    assert folder_module._binary(2 << 30) == "2.0 GiB"
    assert padding_problems("even", {"test": [("test/a.png", (30, 30))] * 4}, 1) == []
