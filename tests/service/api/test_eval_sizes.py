"""``evaluation.sizes`` through the API: malformed lists are a 422 naming the field; a
trained model is measured at the sizes its architecture takes, the others reported
unsupported with why, in every results format."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from tests.utils import API, execute_runs, experiment, image_folder, tiny_spec


@pytest.mark.parametrize(("sizes", "says"), [
    ([0, 16], "not 0"), ([-8], "not -8"), ([16, 32, 16], "lists 16 more than once"),
    ([4096], "from 1 to 512, not 4096"), (list(range(8, 8 + 17)), "at most 16 items"),
    ("16", "valid list")])
def test_a_malformed_size_list_is_422_naming_evaluation_sizes(client: TestClient, sizes,
                                                              says: str) -> None:
    r = client.post(f"{API}/experiments?dry_run=true",
                    json=tiny_spec(evaluation={"sizes": sizes}))
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "evaluation", "sizes"]
    assert says in error["msg"]


def _mse_at(blob: bytes, test, size: int) -> float:
    """The saved baseline's MSE on ``test`` (an ImageSet), input and output at ``size``
    px: computed here, without models.metrics."""
    from models.architectures import ConvAutoencoder
    from models.data import normalize, to_float

    saved = torch.load(io.BytesIO(blob), weights_only=False)
    model = ConvAutoencoder(latent_dim=saved["latent_dim"], crop=saved["crop"])
    model.load_state_dict(saved["state"])
    model.eval().set_output_size(size)
    x = to_float(test.images, size)
    with torch.no_grad():
        out = model(normalize(x)).clamp(0, 1)
    return float((out.double() - x.double()).pow(2).mean())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # storage: test_migrations
def test_a_model_is_measured_at_the_sizes_it_takes_and_the_rest_say_why(
        client: TestClient, settings) -> None:
    """The study's question, "does progressive resizing generalise to other sizes":
    each run measured at 16, 32 and 64 px where its architecture takes them. A flat
    folder of 32-px images (served at the size, as CIFAR-10 is; unlabelled, so no probes
    or classifier make the test slow)."""
    from models.datasets import dataset_entry
    from models.images import ImageSet

    root = Path(settings.datasets_path)
    image_folder(root, "tiny", size=(32, 32), classes=(), train=40, test=8)
    spec = tiny_spec("baseline", "factorized_prior", datasets=["tiny"], batch_size=8,
                     data={"train_limit": 32}, compression={"codecs": []},
                     evaluation={"sizes": [16, 32, 64]})
    exp = client.post(f"{API}/experiments", json=spec).json()

    def size_rows() -> list[tuple]:
        rows = client.get(f"{API}/experiments/{exp['id']}/results").json()["rows"]
        return [(r["model"], r["eval_size"], r["eval_size_status"]) for r in rows
                if r["kind"] == "size"]

    assert size_rows() == [  # before any run: which sizes each run takes
        ("baseline", 16, "pending"), ("baseline", 32, "pending"),
        ("baseline", 64, "unsupported"), ("factorized_prior", 16, "unsupported"),
        ("factorized_prior", 32, "pending"), ("factorized_prior", 64, "unsupported")]
    assert execute_runs(client, experiment(client, exp["id"])) == [True, True]
    table = client.get(f"{API}/experiments/{exp['id']}/results").json()
    assert [c for c in table["columns"] if c.startswith("eval_size")] == [
        "eval_size", "eval_size_status", "eval_size_note"]
    model_rows = {r["model"]: r for r in table["rows"] if r["kind"] == "model"}
    at = {(r["model"], r["eval_size"]): r for r in table["rows"] if r["kind"] == "size"}
    assert {k: r["eval_size_status"] for k, r in at.items()} == {
        ("baseline", 16): "measured", ("baseline", 32): "measured",
        ("baseline", 64): "unsupported", ("factorized_prior", 16): "unsupported",
        ("factorized_prior", 32): "measured", ("factorized_prior", 64): "unsupported"}
    assert at[("factorized_prior", 16)]["eval_size_note"] == (
        "factorized_prior cannot change its output size: a model trained at 32 px takes "
        "32 px only")
    assert at[("baseline", 64)]["eval_size_note"] == (
        "conv trained at 32 px changes its output to 16 or 32 px only")
    assert at[("baseline", 64)]["mse"] is None
    for model, row in model_rows.items():  # the crop itself: the run's own evaluation
        assert row["eval_size"] == 32
        same = at[(model, 32)]
        assert (same["mse"], same["ssim"], same["psnr_per_image"]) == (
            row["mse"], row["ssim"], row["psnr_per_image"])
    small, full = at[("baseline", 16)], at[("baseline", 32)]
    assert small["mse"] != pytest.approx(full["mse"], rel=1e-3)
    run_id = model_rows["baseline"]["run_id"]
    blob = client.get(f"{API}/runs/{run_id}/artifacts/model.pt").content
    _, raw = dataset_entry("tiny").read(root, download=False)
    test = ImageSet.of(raw)
    assert small["mse"] == pytest.approx(_mse_at(blob, test, 16), rel=1e-5)
    assert full["mse"] == pytest.approx(_mse_at(blob, test, 32), rel=1e-5)
    run = client.get(f"{API}/runs/{run_id}").json()
    assert [(m["size"], m["n_images"]) for m in run["size_measures"]] == [(16, 8), (32, 8)]

    md = client.get(f"{API}/experiments/{exp['id']}/results?format=markdown").text
    assert "### At other sizes (evaluation.sizes)" in md
    assert "| Baseline at 16 px | 16 |" in md
    assert "unsupported: factorized_prior cannot change its output size" in md
    csv = client.get(f"{API}/experiments/{exp['id']}/results?format=csv").text
    head, *lines = csv.splitlines()
    assert "eval_size_status" in head.split(",")
    assert sum(",size," in line for line in lines) == 6
