"""Bjøntegaard deltas of model curves against codec curves (service.results.rate_distortion)
and the rate–distortion answer that carries them."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.context import context_of
from service.persistence import repository as repo
from service.persistence.db import transaction
from service.results.rate_distortion import bjontegaard_delta
from tests.utils import API
from workers.measures import CodecRow, RunMeasures

# An anchor curve: PSNR rising ~3 dB per doubling of the rate, not a straight line in log-rate.
ANCHOR = [(0.25, 24.0), (0.5, 27.5), (1.0, 30.2), (2.0, 33.9), (4.0, 36.0)]
# One straight in log-rate (3 dB per doubling): its interpolant through any two points is it.
LINE = [(2.0 ** k, 30.0 + 3 * k) for k in range(-2, 3)]


def test_half_the_rate_at_equal_psnr_is_a_bd_rate_of_minus_50_percent() -> None:
    half = [(bpp / 2, psnr) for bpp, psnr in ANCHOR]
    bd = bjontegaard_delta(half, ANCHOR)
    assert bd["bd_rate_pct"] == pytest.approx(-50.0, abs=0.1)
    assert bd["psnr_range_db"] == [24.0, 36.0]  # equal PSNR ranges: all of it
    assert bd["bpp_range"] == [0.25, 2.0]  # the rates overlap only there
    assert bd["bd_psnr_db"] > 0  # more PSNR at equal rate
    assert (bd["method"], bd["points"], bd["bd_rate_reason"]) == ("pchip", [5, 5], None)
    # The same curve against itself is no change; the anchor against the half-rate curve,
    # twice the bits (+100 %).
    assert bjontegaard_delta(ANCHOR, ANCHOR)["bd_rate_pct"] == pytest.approx(0.0, abs=1e-9)
    assert bjontegaard_delta(ANCHOR, half)["bd_rate_pct"] == pytest.approx(100.0, abs=0.2)


def test_only_the_overlapping_psnr_range_counts() -> None:
    """A model curve at half the rate over the anchor's upper PSNR range, then far beyond
    it: averaged over the overlap only (within 1.5 % of −50: its interpolant's end slopes
    differ from the anchor's there), whatever it does outside it."""
    model = [(bpp / 2, psnr) for bpp, psnr in ANCHOR[2:]]
    for beyond in ([], [(3.0, 45.0)], [(30.0, 80.0)]):
        bd = bjontegaard_delta(model + beyond, ANCHOR)
        assert bd["psnr_range_db"] == [30.2, 36.0]
        assert bd["bd_rate_pct"] == pytest.approx(-50.0, abs=1.5)


def test_a_dominated_point_is_left_off_the_envelope() -> None:
    """A model point with more bits and less PSNR than another (a badly trained λ) is not
    on the curve: the interpolation needs PSNR rising with rate."""
    half = [(bpp / 2, psnr) for bpp, psnr in ANCHOR]
    bd = bjontegaard_delta([*half, (0.6, 25.0)], ANCHOR)
    assert bd["points"] == [5, 5]
    assert bd["bd_rate_pct"] == pytest.approx(-50.0, abs=0.1)
    assert bd["dropped"] == ["the model: 1 point not above a cheaper point's PSNR dropped"]


def test_curves_that_do_not_overlap_give_null_with_the_reason() -> None:
    high = [(bpp, psnr + 20.0) for bpp, psnr in ANCHOR]  # every PSNR above the anchor's
    bd = bjontegaard_delta(high, ANCHOR)
    assert (bd["bd_rate_pct"], bd["psnr_range_db"]) == (None, None)
    assert bd["bd_rate_reason"] == ("PSNR ranges do not overlap: model 44.00–56.00 dB, "
                                    "anchor 24.00–36.00 dB")
    assert bd["bd_psnr_db"] == pytest.approx(20.0)  # the rates do overlap
    far = [(bpp * 100, psnr) for bpp, psnr in ANCHOR]
    assert bjontegaard_delta(far, ANCHOR)["bd_psnr_reason"] == (
        "bpp ranges do not overlap: model 25.000–400.000, anchor 0.250–4.000 bit/px")
    one = bjontegaard_delta([(1.0, 30.0), (2.0, float("nan"))], ANCHOR)
    assert (one["bd_rate_pct"], one["bd_psnr_db"]) == (None, None)
    assert one["bd_rate_reason"] == one["bd_psnr_reason"] == (
        "fewer than 2 points on the upper envelope: the model has 1 usable point of 2 "
        "(before the fit, the model: 1 point without a finite, positive bpp and a finite "
        "PSNR dropped)")


TIED = ("the model: 1 point at a tied rate (0.5 bit/px: the same bpp as another point, "
        "whose higher PSNR is kept) dropped")


def test_points_at_a_tied_rate_are_dropped_and_the_answer_says_so() -> None:
    """Two λ that measure the same bytes (an undertrained model whose rate has not moved
    yet) are one rate on the curve: the higher PSNR is kept, and the answer says the other
    was dropped — in the reason when there is no delta, in ``dropped`` always."""
    tied = bjontegaard_delta([(0.5, 27.0), (0.5, 26.0)], ANCHOR)
    assert (tied["bd_rate_pct"], tied["points"], tied["dropped"]) == (None, [1, 5], [TIED])
    assert tied["bd_rate_reason"] == tied["bd_psnr_reason"] == (
        "fewer than 2 points on the upper envelope: the model has 1 usable point of 2 "
        f"(before the fit, {TIED})")
    half = [(bpp / 2, psnr) for bpp, psnr in ANCHOR]
    bd = bjontegaard_delta([*half, (0.5, 20.0)], ANCHOR)  # 0.5: half of the anchor's 1.0
    assert bd["bd_rate_pct"] == pytest.approx(-50.0, abs=0.1)
    assert (bd["points"], bd["dropped"], bd["bd_rate_reason"]) == ([5, 5], [TIED], None)
    high = bjontegaard_delta([(1.0, 60.0), (1.0, 50.0), (2.0, 70.0)], ANCHOR)
    assert high["bd_rate_reason"] == (
        "PSNR ranges do not overlap: model 60.00–70.00 dB, anchor 24.00–36.00 dB (before "
        "the fit, the model: 1 point at a tied rate (1 bit/px: the same bpp as another "
        "point, whose higher PSNR is kept) dropped)")


def _experiment_with_curves(client: TestClient) -> dict:
    """An experiment whose factorized_prior points (2 λ) sit at half LINE's rate, its
    baseline at one point, and a JPEG curve on LINE: measures stored directly."""
    exp = client.post(f"{API}/experiments", json={
        "models": ["baseline", "factorized_prior"], "datasets": ["mnist"],
        "lambdas": [0.01, 0.05]}).json()
    runs = {(r["model"], r.get("rd_lambda")): r["id"] for r in exp["runs"]}
    required = {"mae": 0.05, "mse": 0.004, "ssim": 0.7, "n_images": 16,
                "training_time_s": 2.0, "params": 10, "latent_dim": 8,
                "compression_ratio": 384.0, "compression_ratio_bytes": 96.0}
    curve = [CodecRow(codec="jpeg", kind="curve", status=None, quality=q, target_bytes=None,
                      min_bytes_per_image=None, max_bytes_per_image=None,
                      bytes_per_image=bpp * 98, bpp=bpp, mse=0.01, mae=0.05, psnr=psnr,
                      ssim=0.6, classifier_accuracy=None, n_images=16,
                      psnr_per_image=psnr + 0.5, ms_ssim=None)
             for q, (bpp, psnr) in zip((10, 30, 50, 70, 90), LINE, strict=True)]
    with transaction(context_of(client.app).sessions) as s:
        for lam, (bpp, psnr) in ((0.01, LINE[1]), (0.05, LINE[3])):
            half = RunMeasures(**required, psnr=psnr, q_psnr=psnr, q_ssim=0.8, bpp=bpp / 2,
                               bytes_per_image=bpp * 49, rd_lambda=lam,
                               q_psnr_per_image=psnr + 1.0,
                               q_ms_ssim=0.95 if lam == 0.05 else None)
            repo.record_measures(s, run_id=runs[("factorized_prior", lam)], measures=half,
                                 codecs=curve if lam == 0.01 else [])
        repo.record_measures(s, run_id=runs[("baseline", None)], measures=RunMeasures(
            **required, psnr=30.0, q_psnr=30.0, q_ssim=0.8, bpp=1.0, bytes_per_image=98.0))
    return exp


def test_the_answer_gives_each_model_curve_its_deltas_against_the_anchor(
        client: TestClient) -> None:
    exp = _experiment_with_curves(client)
    url = f"{API}/experiments/{exp['id']}/rate_distortion"
    assert all(s["bd"] is None for s in client.get(url).json()["series"])
    series = {s["name"]: s for s in client.get(url, params={"anchor": "jpeg"}).json()["series"]}
    fp = series["factorized_prior"]["bd"]
    assert (fp["anchor"], fp["method"], fp["points"], fp["dropped"]) == (
        "jpeg", "pchip", [2, 5], [])
    assert fp["psnr_range_db"] == [27.0, 33.0]
    assert fp["bd_rate_pct"] == pytest.approx(-50.0, abs=0.1)
    base = series["baseline"]["bd"]
    assert (base["bd_rate_pct"], base["bd_psnr_db"]) == (None, None)
    assert base["bd_rate_reason"] == (
        "fewer than 2 points on the upper envelope: the model has 1 usable point")
    assert series["jpeg"]["bd"] is None
    webp = client.get(url, params={"anchor": "webp"}).json()["series"][0]["bd"]
    assert webp["bd_rate_reason"] == "no webp curve on mnist (compression.codecs)"
    bad = client.get(url, params={"anchor": "png"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "anchor"]
    page = client.get(f"/experiments/{exp['id']}/rate_distortion").text
    assert "BD-rate vs JPEG" in page and "-50.0 %" in page
    assert 'title="fewer than 2 points on the upper envelope' in page


def parse_json_file(data: dict, metric: str) -> dict:
    """compressai.utils.plot's reader of a result file (CompressAI 1.2,
    compressai/utils/plot/__main__.py ``parse_json_file``), on the parsed JSON."""
    results = data.get("results", data)
    if metric not in results:
        raise ValueError(f'Error: metric "{metric}" not available. '
                         f'Available metrics: {", ".join(results.keys())}')
    if metric == "ms-ssim":
        values = np.array(results[metric])
        results[metric] = -10 * np.log10(1 - values)
    return {"name": data.get("name"), "xs": results["bpp"], "ys": results[metric]}


def parse_json_file_rgb(data: dict, metric: str) -> dict:
    """compressai.utils.plot's reader since CompressAI 1.2.5 (commit 3d3c9bb, "clarify RGB
    metrics"; the same at 1.2.8): ``psnr`` and ``ms-ssim`` are read as ``psnr-rgb`` and
    ``ms-ssim-rgb``, the keys its eval_model has written since."""
    results = dict(data.get("results", data))
    if metric in ["psnr", "ms-ssim"]:
        metric = f"{metric}-rgb"
    if metric not in results:
        raise ValueError(f'Error: metric "{metric}" not available. '
                         f'Available metrics: {", ".join(results.keys())}')
    if "ms-ssim" in metric:
        values = np.array(results[metric], dtype=float)  # a null is NaN here
        results[metric] = (-10 * np.log10(1 - values)).tolist()
    return {"name": data.get("name"), "xs": results["bpp"], "ys": results[metric]}


def test_the_compressai_export_has_eval_models_rgb_keys(client: TestClient) -> None:
    """CompressAI's eval_model writes ``psnr-rgb`` and ``ms-ssim-rgb`` and its plot reads
    ``--metric psnr`` as ``psnr-rgb``: the export carries both, aligned with ``bpp``,
    ``ms-ssim-rgb`` null at each point whose MS-SSIM was not measured."""
    exp = _experiment_with_curves(client)
    answer = client.get(f"{API}/experiments/{exp['id']}/rate_distortion",
                        params={"format": "compressai"}).json()
    files = {f["name"]: f["results"] for f in answer}
    assert files["Factorized Prior (mnist)"] == {
        "bpp": [0.25, 1.0], "psnr": [28.0, 34.0], "psnr-rgb": [28.0, 34.0],
        "ms-ssim-rgb": [None, 0.95]}
    assert files["JPEG (mnist)"]["ms-ssim-rgb"] == [None] * len(LINE)
    assert files["Baseline (mnist)"] == {"bpp": [], "psnr": [], "psnr-rgb": [],
                                         "ms-ssim-rgb": []}
    named = {f["name"]: f for f in answer}
    fp = parse_json_file_rgb(named["Factorized Prior (mnist)"], "psnr")
    assert (fp["xs"], fp["ys"]) == ([0.25, 1.0], [28.0, 34.0])
    ms = parse_json_file_rgb(named["Factorized Prior (mnist)"], "ms-ssim")["ys"]
    assert np.isnan(ms[0]) and ms[1] == pytest.approx(-10 * np.log10(0.05))


def test_the_compressai_export_is_what_its_plot_utility_reads(client: TestClient) -> None:
    exp = _experiment_with_curves(client)
    answer = client.get(f"{API}/experiments/{exp['id']}/rate_distortion",
                        params={"format": "compressai"})
    assert answer.status_code == 200
    files = {f["name"]: f for f in answer.json()}
    assert set(files) == {"Baseline (mnist)", "Factorized Prior (mnist)", "JPEG (mnist)"}
    for f in files.values():
        assert set(f) == {"name", "description", "results"}
        assert "mean over images of each image's PSNR" in f["description"]
    fp = parse_json_file(files["Factorized Prior (mnist)"], "psnr")
    # Per-image PSNR (not the split's q_psnr), bpp sorted as the series is.
    assert (fp["xs"], fp["ys"]) == ([0.25, 1.0], [28.0, 34.0])
    jpeg = parse_json_file(files["JPEG (mnist)"], "psnr")
    assert jpeg["xs"] == [b for b, _ in LINE] and jpeg["ys"] == [p + 0.5 for _, p in LINE]
    # The baseline's run predates per-image PSNR: no point, and the description says so.
    assert files["Baseline (mnist)"]["results"] == {"bpp": [], "psnr": [], "psnr-rgb": [],
                                                    "ms-ssim-rgb": []}
    assert "1 point(s) without a finite per-image PSNR left out" in \
        files["Baseline (mnist)"]["description"]
    with pytest.raises(ValueError, match='metric "ms-ssim" not available'):
        parse_json_file(files["JPEG (mnist)"], "ms-ssim")  # 32-px images: none measured
