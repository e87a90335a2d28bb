"""Folder datasets through the API: listed in the catalog, named (never by path) by specs,
checked by preflight."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.utils import API, image_folder, tiny_spec


def test_the_catalog_lists_a_folder_with_its_facts(client: TestClient, settings) -> None:
    image_folder(Path(settings.datasets_path), "shapes", size=(64, 96), train=3, test=2)
    image_folder(Path(settings.datasets_path), "notes", classes=(), train=1, test=1)
    (Path(settings.datasets_path) / "Not_A_Name" / "train").mkdir(parents=True)
    body = {d["name"]: d for d in client.get(f"{API}/catalog").json()["datasets"]}
    shapes = body["shapes"]
    assert (shapes["train_size"], shapes["test_size"], shapes["channels"]) == (6, 4, 3)
    assert (shapes["min_size"], shapes["max_size"]) == ([64, 96], [64, 96])
    assert shapes["classes"] == ["circles", "squares"] and shapes["available"]
    assert body["notes"]["num_classes"] is None and body["notes"]["classes"] == []
    assert "Not_A_Name" not in body
    photos = body["photos"]
    assert photos["available"] and "astronaut.png" in photos["split"]
    assert (photos["min_size"], photos["max_size"]) == ([300, 451], [1411, 1411])
    assert body["kodak"]["status"] == "missing"


@pytest.mark.parametrize("name", ["../shapes", "/etc/passwd", "shapes/train", "nothing"])
def test_unknown_or_path_like_dataset_names_are_422(client: TestClient, settings,
                                                    name: str) -> None:
    image_folder(Path(settings.datasets_path), "shapes", train=1, test=1)
    r = client.post(f"{API}/experiments?dry_run=true", json=tiny_spec(datasets=[name]))
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"][:2] == ["body", "datasets"]
    assert ("is a path" in error["msg"]) == ("/" in name)
    assert "shapes" in error["msg"]  # the valid names, the folder's among them


def test_a_flat_folder_runs_without_a_classifier_and_the_results_say_why(
        client: TestClient, settings) -> None:
    image_folder(Path(settings.datasets_path), "notes", size=(32, 32), classes=(),
                 train=20, test=3)
    spec = tiny_spec(datasets=["notes"], epochs=1, batch_size=8,
                     data={"train_limit": 16, "test_limit": 3},
                     classifier={"arch": "small", "frozen_epochs": 1, "unfrozen_epochs": 0,
                                 "pretrained": False},
                     compression={"codecs": []})
    exp = client.post(f"{API}/experiments", json=spec).json()
    from tests.utils import execute_runs, experiment

    assert execute_runs(client, experiment(client, exp["id"])) == [True]
    table = client.get(f"{API}/experiments/{exp['id']}/results").json()
    assert table["rows"][0]["classifier_accuracy"] is None
    assert table["notes"][0] == (
        "notes: no classifier_accuracy, original_accuracy, q_accuracy, probe_knn_accuracy, "
        "probe_linear_accuracy, cluster_nmi, q_probe_knn_accuracy, q_probe_linear_accuracy, "
        "q_cluster_nmi: its images have no labels (Images of the folder notes/ (flat "
        "layout: unlabelled, so no classifier accuracy).), so there is no reference "
        "classifier to measure reconstructions with, nor classes to probe the codes for")
    assert table["notes"][1].startswith("notes: no ms_ssim, q_ms_ssim: MS-SSIM's 5 scales")
    md = client.get(f"{API}/experiments/{exp['id']}/results?format=markdown").text
    assert "Note: notes: no classifier_accuracy, original_accuracy, q_accuracy" in md


def test_preflight_names_a_corrupt_file(client: TestClient, settings) -> None:
    from service.spec import ExperimentSpec
    from workers.preflight import PreflightFailed, preflight

    folder = image_folder(Path(settings.datasets_path), "shapes", size=(32, 32), train=10,
                          test=2)
    bad = folder / "test" / "squares" / "zz.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (spec,) = ExperimentSpec.model_validate(
        tiny_spec(datasets=["shapes"], batch_size=8, data={"train_limit": 16})).run_specs()
    with pytest.raises(PreflightFailed) as err:
        preflight(spec, data_root="/unused", weights_dir=settings.weights_path,
                  allow_download=False)
    # By its path in the dataset, in plain text: no PosixPath('…') or BytesIO repr.
    assert str(err.value) == (
        f"missing or unusable on this node: dataset shapes in {folder}: "
        "test/squares/zz.png is not a readable image (Pillow cannot identify it as an "
        "image): delete or replace it.")


def test_larger_images_train_on_crops_and_are_measured_whole(client: TestClient,
                                                             settings) -> None:
    """The issue's test: 96×64 images in two class folders, baseline on 32-px crops."""
    from tests.utils import execute_runs, experiment

    image_folder(Path(settings.datasets_path), "wide", size=(64, 96), train=8, test=2)
    spec = tiny_spec(datasets=["wide"], epochs=1, batch_size=16,
                     data={"crop": 32, "validation": "test"},
                     classifier={"arch": "small", "frozen_epochs": 1, "unfrozen_epochs": 0,
                                 "pretrained": False},
                     compression={"codecs": ["jpeg"]}, gallery_samples=2)
    exp = client.post(f"{API}/experiments", json=spec).json()
    assert execute_runs(client, experiment(client, exp["id"])) == [True]
    run = client.get(f"{API}/runs/{exp['runs'][0]['id']}").json()
    assert [e["size"] for e in run["epochs"]] == [32]  # trained on 32-px crops
    m = run["measures"]
    assert (m["n_images"], m["native_pixels"], m["raw_bytes_per_image"]) == (4, 96 * 64,
                                                                               3 * 96 * 64)
    assert m["bpp"] == pytest.approx(8 * m["bytes_per_image"] / (96 * 64))
    assert m["classifier_accuracy"] is not None  # the classifier sees whole images
    rows = client.get(f"{API}/experiments/{exp['id']}/results").json()["rows"]
    (jpeg,) = [r for r in rows if r["kind"] == "codec"]
    assert jpeg["bpp"] == pytest.approx(8 * jpeg["bytes_per_image"] / (96 * 64))
    assert jpeg["bytes_per_image"] > 300  # whole 96×64 JPEG files, not 32-px tiles
    gallery = client.get(f"{API}/runs/{run['id']}/artifacts/gallery.json").json()
    assert gallery["sizes"] == [[64, 96], [64, 96]] and gallery["whole"]
    # One code per tile, not per image: no probes and no PCA of the codes.
    assert m["probe_knn_accuracy"] is None
    assert "codes-pca.json" not in {a["name"] for a in run["artifacts"]}


def test_a_variant_that_cannot_take_the_crop_is_422(client: TestClient) -> None:
    r = client.post(f"{API}/experiments?dry_run=true",
                    json=tiny_spec("baseline", "resnet", data={"crop": 48}))
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "models"]
    assert "resnet takes crops that are multiples of 32 px, not 48" in error["msg"]
    assert "baseline" not in error["msg"]


def test_a_folder_at_a_registered_url_is_listed_and_trained_on(settings, tmp_path: Path
                                                               ) -> None:
    """AELAB_DATASET_URLS names a shared folder by an fsspec URL (memory:// here): the
    catalog lists it, a spec names it, a run reads it through fsspec; the URL itself is
    no dataset name."""
    import uuid

    import fsspec

    from models.datasets.folder import use_urls
    from service.app import create_app
    from tests.utils import execute_runs, experiment

    folder = image_folder(tmp_path / "upload", "notes", size=(32, 32), classes=(),
                          train=20, test=3)
    base = f"aelab-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    fs.put(str(folder), f"/{base}/notes", recursive=True)
    url = f"memory://{base}/notes"
    app = create_app(settings.model_copy(update={"dataset_urls": {"shared": url}}))
    try:
        with TestClient(app) as client:
            body = {d["name"]: d for d in client.get(f"{API}/catalog").json()["datasets"]}
            shared = body["shared"]
            assert (shared["available"], shared["train_size"], shared["test_size"]) == (
                True, 20, 3)
            assert f"at the registered URL {url}" in shared["description"]
            r = client.post(f"{API}/experiments?dry_run=true", json=tiny_spec(datasets=[url]))
            assert r.status_code == 422 and "is a path" in r.json()["detail"][0]["msg"]
            spec = tiny_spec(datasets=["shared"], epochs=1, batch_size=8,
                             data={"train_limit": 16}, compression={"codecs": []})
            exp = client.post(f"{API}/experiments", json=spec).json()
            assert execute_runs(client, experiment(client, exp["id"])) == [True]
            run = client.get(f"{API}/runs/{exp['runs'][0]['id']}").json()
            assert run["measures"]["n_images"] == 3
    finally:
        use_urls(None)
        fs.rm(f"/{base}", recursive=True)


@pytest.mark.parametrize(("data", "count"), [
    ({"validation": "test"}, "its 6 training images (2 random crops of 32 px from each: 12 "
                             "crops)"),
    ({"crop": 32}, "its 5 training images (of 6 less the 10% validation hold-out, 2 random "
                   "crops of 32 px from each: 10 crops)")])
def test_a_batch_larger_than_a_folders_training_split_is_422_naming_both(
        client: TestClient, settings, data: dict, count: str) -> None:
    """No train_limit: the split is the folder's, and batch_size is the field to lower."""
    image_folder(Path(settings.datasets_path), "few", size=(32, 64), train=3, test=2)
    spec = tiny_spec(datasets=["few"], batch_size=32, data={"test_limit": 2, **data})
    for query in ("?dry_run=true", ""):
        r = client.post(f"{API}/experiments{query}", json=spec)
        assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert (error["loc"], error["input"]) == (["body", "batch_size"], 32)
    assert error["msg"].startswith(f"batch_size 32 exceeds the training split of few: "
                                   f"{count} do not fill one batch; lower batch_size")
    assert client.get(f"{API}/experiments").json()["items"] == []  # nothing was made
