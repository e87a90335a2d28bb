"""Real (small) runs through the worker pipeline and the DB store, read back over REST."""

from __future__ import annotations

import csv
import io
import re

from fastapi.testclient import TestClient
from PIL import Image

from tests.utils import API, SMALL_CLASSIFIER, execute_runs, tiny_spec

SPEC = tiny_spec("baseline", "pixel_shuffle", name="tiny study", classifier=SMALL_CLASSIFIER)


def test_results_in_three_formats_from_real_runs(client: TestClient) -> None:
    experiment = client.post(f"{API}/experiments", json=SPEC).json()
    assert execute_runs(client, experiment) == [True, True]

    exp = client.get(f"{API}/experiments/{experiment['id']}").json()
    assert exp["status"] == "succeeded"
    assert all(r["status"] == "succeeded" and r["progress"] == 1.0 for r in exp["runs"])

    table = client.get(f"{API}/experiments/{experiment['id']}/results").json()
    # Rendered once the experiment has ended, then served as rendered.
    assert client.get(f"{API}/experiments/{experiment['id']}/results").json() == table
    rows = {r["model"]: r for r in table["rows"] if r["kind"] == "model"}
    codec_rows = [r for r in table["rows"] if r["kind"] == "codec"]
    assert set(rows) == {"baseline", "pixel_shuffle"}
    # Bytes per image on every row: a model's measured stream, a codec's whole files.
    assert all(r["bytes_per_image"] > 0 and r["bpp"] > 0 for r in table["rows"])
    for r in rows.values():
        assert r["quant_bits"] == 8 and r["raw_bytes_per_image"] == 3072
        assert r["bpp"] == 8 * r["bytes_per_image"] / 1024
        assert 0 < r["q_mse"] < 1 and 0 <= r["q_accuracy"] <= 1 and r["q_ssim"] <= 1
        assert r["nominal_compression_ratio"] == 3.072
        mine = [c for c in codec_rows if c["run_id"] == r["run_id"]]
        assert [c["codec"] for c in mine] == ["jpeg", "webp"]
        for c in mine:
            assert c["model"] == r["model"] and 0 < c["mse"] < 1
            assert 0 <= c["classifier_accuracy"] <= 1
            if c["codec_status"] == "matched":
                assert abs(c["bytes_per_image"] - r["bytes_per_image"]) <= \
                    0.05 * r["bytes_per_image"]
            else:  # the model's size is outside what the codec can reach
                assert c["codec_status"] in ("below_range", "above_range")
    for r in rows.values():
        assert 0 < r["mse"] < 1 and r["mae"] ** 2 <= r["mse"] <= r["mae"]
        assert 0 <= r["classifier_accuracy"] <= 1 and 0 <= r["original_accuracy"] <= 1
        assert r["lr"] == 1e-3 and r["latent_dim"] == 1000 and r["status"] == "succeeded"
        assert r["training_time_s"] > 0
    assert rows["baseline"]["params"] == 3_080_629
    # One reference classifier served both runs.
    assert rows["baseline"]["original_accuracy"] == rows["pixel_shuffle"]["original_accuracy"]

    text = client.get(f"{API}/experiments/{experiment['id']}/results",
                      params={"format": "csv"})
    assert text.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(text.text)))
    assert [p["model"] for p in parsed if p["kind"] == "model"] == ["baseline",
                                                                    "pixel_shuffle"]
    assert [(p["kind"], p["codec"]) for p in parsed][:3] == [
        ("model", ""), ("codec", "jpeg"), ("codec", "webp")]
    assert float(parsed[0]["mse"]) == rows["baseline"]["mse"]

    md = client.get(f"{API}/experiments/{experiment['id']}/results",
                    params={"format": "markdown"}).text
    assert "# tiny study" in md and "## Synthetic shapes" in md
    # MAE, MSE, PSNR split-level, SSIM, PSNR per-image mean: not the original images'.
    assert "| Original images | n/a | n/a | n/a | n/a | n/a | " \
        f"{rows['baseline']['original_accuracy']:.4f}" in md
    assert f"| Baseline | {rows['baseline']['mae']:.6f} | {rows['baseline']['mse']:.6f} |" in md
    assert "| Pixel Shuffle |" in md
    assert "| 3072 (raw uint8) | 24.0 |" in md
    baseline_bytes = rows["baseline"]["bytes_per_image"]
    jpeg = next(c for c in codec_rows if c["run_id"] == rows["baseline"]["run_id"])
    assert f"| JPEG @ {jpeg['bytes_per_image']:.0f} B (Baseline's size" in md
    assert f"| {baseline_bytes:.1f} | {rows['baseline']['bpp']:.3f} |" in md
    assert client.get(f"{API}/experiments/{experiment['id']}/results",
                      params={"format": "xml"}).status_code == 422

    run = client.get(f"{API}/runs/{experiment['runs'][0]['id']}").json()
    assert [e["epoch"] for e in run["epochs"]] == [1, 2]
    assert run["epochs"][0]["phase"] == "phase1" and run["epochs"][1]["phase"] == "phase2"
    assert run["lr_trials"] == [{"method": "fixed", "lr": 1e-3, "loss": None, "iterations": 0,
                                 "stopped_early": False, "chosen": True}]
    assert run["measures"]["mse"] == rows["baseline"]["mse"]
    # Every measure the trainer reports reaches the API (native_pixels was once dropped).
    assert run["measures"]["native_pixels"] == 1024 and run["measures"]["rd_lambda"] is None
    assert {a["name"] for a in run["artifacts"]} == {
        "samples.png", "model.pt", "gallery-inputs.png", "gallery-recon.png", "gallery.json",
        "timings.json", "latents-test.bin", "compression.json", "codes-pca.json"}
    stream = client.get(f"{API}/runs/{run['id']}/artifacts/latents-test.bin").content
    assert len(stream) / 64 == run["measures"]["bytes_per_image"]
    meta = client.get(f"{API}/runs/{run['id']}/artifacts/compression.json").json()
    assert meta["bits"] == 8 and meta["stream_bytes"] == len(stream)
    # Its page draws the test codes' PCA (models.probes.code_projection, checked against
    # numpy in tests/workers/test_gallery_artifacts.py): one point per stored point.
    from tests.service.web.test_pages import scatter

    pca = client.get(f"{API}/runs/{run['id']}/artifacts/codes-pca.json").json()
    page = client.get(f"/runs/{run['id']}").text
    points, axes = scatter(page)
    assert [(int(p["data-index"]), int(p["data-label"])) for p in points] == list(
        zip(pca["index"], pca["label"], strict=True)) and len(points) == 64
    colours = {int(p["data-label"]): p["fill"] for p in points}  # one colour per class
    assert len(set(colours.values())) == len(colours) == len(set(pca["label"])) > 1
    from models.datasets.synthetic import SHAPES  # the legend names each class

    legend = re.findall(r'<li><svg[^>]*><circle[^>]*fill="([^"]+)"/></svg>\s*([^<]*)</li>',
                        page)
    assert {SHAPES.index(name.strip()): f for f, name in legend} == colours
    ratio = pca["explained_variance_ratio"]
    assert axes == [f"PC 1 ({100 * ratio[0]:.1f} % of the variance)",
                    f"PC 2 ({100 * ratio[1]:.1f} % of the variance)"]
    timings = client.get(f"{API}/runs/{run['id']}/artifacts/timings.json").json()
    assert set(timings) == {"pipeline_started_unix", "training_started_unix", "prepare_s",
                            "search_s", "train_s", "classifier_s", "evaluate_s", "wall_s"}
    assert timings["train_s"] >= run["measures"]["training_time_s"]
    png = client.get(f"{API}/runs/{run['id']}/samples.png")
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size[0] > 0
    weights = client.get(f"{API}/runs/{run['id']}/artifacts/model.pt")
    assert weights.status_code == 200 and len(weights.content) > 1_000_000

    assert client.delete(f"{API}/experiments/{experiment['id']}").status_code == 204
    assert client.get(f"{API}/runs/{run['id']}/samples.png").status_code == 404


def test_a_failing_run_fails_alone_with_its_error(client: TestClient) -> None:
    experiment = client.post(f"{API}/experiments", json={
        **SPEC, "classifier": {"enabled": False}}).json()
    # Read before the runs end: the table of an unfinished experiment is never kept.
    queued = client.get(f"{API}/experiments/{experiment['id']}/results").json()["rows"]
    assert [r["status"] for r in queued] == ["queued", "queued"]
    outcomes = execute_runs(client, experiment, lr={"baseline": 1e12})
    assert outcomes == [False, True]
    exp = client.get(f"{API}/experiments/{experiment['id']}").json()
    failed, ok = exp["runs"]
    assert failed["status"] == "failed" and "TrainingDiverged" in failed["error"]
    assert ok["status"] == "succeeded" and ok["error"] is None
    assert exp["status"] == "failed" and exp["error"] == "1 of 2 runs failed"
    rows = client.get(f"{API}/experiments/{experiment['id']}/results").json()["rows"]
    assert rows[0]["mse"] is None and rows[1]["mse"] is not None
    assert rows[0]["bytes_per_image"] is None and rows[1]["bytes_per_image"] > 0
    md = client.get(f"{API}/experiments/{experiment['id']}/results",
                    params={"format": "markdown"}).text
    assert "| Baseline | n/a | n/a |" in md and "| failed |" in md


RD_SPEC = tiny_spec("baseline", "factorized_prior", name="rd", lambdas=[1e-4, 0.05],
                    lr_search={"method": "fixed", "lr": 1e-2}, schedule="one_cycle",
                    compression={"bits": 6, "codecs": ["webp"]})


def test_lambdas_join_the_grid_and_rate_distortion_has_points_and_curves(
        client: TestClient) -> None:
    bad = client.post(f"{API}/experiments", json={**RD_SPEC, "models": ["baseline"]})
    assert bad.status_code == 422
    assert [e["loc"] for e in bad.json()["detail"]] == [["body", "lambdas"]]
    experiment = client.post(f"{API}/experiments", json=RD_SPEC).json()
    assert [(r["model"], r.get("rd_lambda")) for r in experiment["runs"]] == [
        ("baseline", None), ("factorized_prior", 1e-4), ("factorized_prior", 0.05)]
    assert execute_runs(client, experiment) == [True, True, True]
    rows = client.get(f"{API}/experiments/{experiment['id']}/results").json()["rows"]
    models = [r for r in rows if r["kind"] == "model"]
    assert [r["rd_lambda"] for r in models] == [None, 1e-4, 0.05]
    assert [r["quant_bits"] for r in models] == [6, None, None]
    assert [r["codec"] for r in rows if r["kind"] == "codec"] == ["webp"] * 3
    rd = client.get(f"{API}/experiments/{experiment['id']}/rate_distortion").json()
    series = {(s["kind"], s["name"]): s for s in rd["series"]}
    assert set(series) == {("model", "baseline"), ("model", "factorized_prior"),
                           ("codec", "webp")}
    fp = series[("model", "factorized_prior")]["points"]
    assert [p["rd_lambda"] for p in fp] == [1e-4, 0.05]  # sorted by bpp: rate rises with λ
    assert fp[0]["bpp"] < fp[1]["bpp"]
    by_lambda = {r["rd_lambda"]: r for r in models}
    assert fp[0]["bpp"] == by_lambda[1e-4]["bpp"] and fp[0]["psnr"] == by_lambda[1e-4]["q_psnr"]
    webp = series[("codec", "webp")]["points"]
    assert [p["quality"] for p in webp] == sorted(p["quality"] for p in webp)
    assert len(webp) == 6 and webp[0]["bpp"] < webp[-1]["bpp"]
    assert client.get(f"{API}/experiments/999999/rate_distortion").status_code == 404
    import httpx

    from service.client import Client

    typed = Client("http://aelab.test", transport=httpx.MockTransport(
        lambda req: httpx.Response(200, content=client.get(req.url.path).content)
    )).rate_distortion(experiment["id"])
    assert [(s.kind, s.name, len(s.points)) for s in typed.series] == [
        (s["kind"], s["name"], len(s["points"])) for s in rd["series"]]
    page = client.get(f"/experiments/{experiment['id']}/rate_distortion")
    assert page.status_code == 200 and "rd-chart" in page.text
