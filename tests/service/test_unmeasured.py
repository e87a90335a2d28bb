"""Measures a spec's runs cannot have (service.spec.unmeasured): the results say why they
are null, and an ``expect`` bound on one is refused at submit instead of REGRESSING every
run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.utils import API, image_folder, tiny_spec

MS_SSIM = ("MS-SSIM's 5 scales need images of at least 176 px a side (torchmetrics: side "
           "// 16 > 10, its 11-px window at the coarsest scale), and these are measured at ")
NO_CLASSIFIER = "the spec trains no reference classifier (classifier.enabled is false)"
FOLDER = {"batch_size": 8, "data": {"train_limit": 16, "test_limit": 2}}  # a few images


def _folders(settings: Any) -> None:
    root = Path(settings.datasets_path)
    image_folder(root, "flat", size=(32, 32), classes=(), train=20, test=3)
    image_folder(root, "wide", size=(64, 96), train=10, test=2)  # larger than the crop


@pytest.mark.parametrize("dataset,fields,measure,reason", [
    ("synthetic", {}, "ms_ssim", MS_SSIM + "32 px (data.crop, the side its images are "
                                          "served and measured at)"),
    ("synthetic", {}, "q_ms_ssim", MS_SSIM + "32 px"),
    ("synthetic", {}, "classifier_accuracy", NO_CLASSIFIER),
    ("synthetic", {"data": {"test_limit": 5}}, "cluster_nmi",
     "k-means needs at least as many test images as classes (10), and the runs test 5 "
     "(data.test_limit)"),
    ("flat", FOLDER, "probe_knn_accuracy", "its images have no labels (Images of the folder "
                                       "flat/"),
    ("flat", {**FOLDER, "classifier": {"enabled": True}}, "q_accuracy",
     "its images have no labels"),
    ("wide", FOLDER, "probe_linear_accuracy", "its images are evaluated whole, as tiles of "
                                          "data.crop (32 px): there is no one code per "
                                          "image to probe"),
    ("wide", FOLDER, "ms_ssim", MS_SSIM + "64 px (its smallest image)"),
])
def test_a_bound_on_a_measure_the_runs_cannot_have_is_a_422_naming_it(
        client: TestClient, settings: Any, dataset: str, fields: dict[str, Any],
        measure: str, reason: str) -> None:
    _folders(settings)
    key = f"baseline/{dataset}"
    body = tiny_spec(datasets=[dataset], **fields,
                     expect={key: {"mse": "< 1", measure: "> 0"}})
    before = client.get(f"{API}/experiments").json()["items"]
    refused = client.post(f"{API}/experiments", json=body)
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["detail"]
    assert error["loc"] == ["body", "expect", key, measure]
    assert error["msg"].startswith(f"{measure} cannot be measured on {dataset}: {reason}")
    assert error["msg"].endswith("every run would be REGRESSED, so drop this bound")
    assert client.get(f"{API}/experiments").json()["items"] == before  # nothing stored
    # The same spec without that bound is accepted (the bound alone was the problem).
    body["expect"][key].pop(measure)
    accepted = client.post(f"{API}/experiments", params={"dry_run": True}, json=body)
    assert accepted.status_code == 200, accepted.text


def test_the_results_say_why_a_measure_is_null_for_every_run(client: TestClient) -> None:
    """MS-SSIM at 32 px and classifier accuracy without a classifier: null in every row,
    and the JSON, the Markdown and the page say why (before any run has finished, too)."""
    exp = client.post(f"{API}/experiments", json=tiny_spec()).json()
    url = f"{API}/experiments/{exp['id']}/results"
    table = client.get(url).json()
    assert table["notes"] == [
        f"synthetic: no classifier_accuracy, original_accuracy, q_accuracy: {NO_CLASSIFIER}",
        f"synthetic: no ms_ssim, q_ms_ssim: {MS_SSIM}32 px (data.crop, the side its images "
        "are served and measured at)"]
    markdown = client.get(url, params={"format": "markdown"}).text
    shown = MS_SSIM.replace(">", "&gt;")  # Markdown keeps HTML out of its cells
    assert f"Note: synthetic: no ms_ssim, q_ms_ssim: {shown}32 px (data.crop" in markdown
    page = client.get(f"/experiments/{exp['id']}").text
    assert "synthetic: no ms_ssim, q_ms_ssim: MS-SSIM&#39;s 5 scales need" in page


@pytest.mark.parametrize("measure,bound,span", [
    ("psnr", "> 1e308", "[0, Infinity]"),  # meetable: a perfect decode's PSNR is Infinity
    ("classifier_accuracy", "> 1", "[0, 1]"),
    ("probe_knn_accuracy", ">= 1.5", "[0, 1]"),
    ("bpp", "< 0", "[0, Infinity]"),
    ("mse", "< 0", "[0, 1]"),
    ("q_mse", "> 1", "[0, 1]"),
    ("ms_ssim", "> 1", "[-1, 1]"),
    ("ssim", "< -1", "[-1, 1]"),
    ("training_time_s", "<= -5", "[0, Infinity]"),
])
def test_a_bound_no_value_of_its_measure_can_meet_is_a_422_naming_it(
        client: TestClient, measure: str, bound: str, span: str) -> None:
    """Each measure's span (``MeasureInfo.span``, the least and most it can be) decides
    whether a bound can ever be met: one that cannot would make every run REGRESSED."""
    from workers.measures import BY_NAME

    key = "baseline/synthetic"
    body = tiny_spec(classifier={"enabled": True}, data={"crop": 176},
                     expect={key: {"mae": "< 1", measure: bound}})
    answer = client.post(f"{API}/experiments", params={"dry_run": True}, json=body)
    if measure == "psnr":
        assert answer.status_code == 200, answer.text
        assert BY_NAME["psnr"].span == (0.0, float("inf"))
        return
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "expect", key, measure]
    assert error["input"] == bound
    assert error["msg"] == (
        f"{measure} {bound} can never be met: {measure} lies in {span}; "
        "every run would be REGRESSED, so drop or change this bound")
    # The meetable end of the same span is accepted.
    lo, hi = BY_NAME[measure].span
    body["expect"][key][measure] = f">= {hi:g}" if bound.startswith(">") else f"<= {lo:g}"
    accepted = client.post(f"{API}/experiments", params={"dry_run": True}, json=body)
    assert accepted.status_code == 200, accepted.text
