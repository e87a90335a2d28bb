"""The measures contract (workers.measures): one table, the database's columns and the
API's schema kept equal; what the trainer reports is all stored, and nothing unknown
passes."""

from __future__ import annotations

import math
from typing import get_args

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import BigInteger, Integer

from service.context import context_of
from service.persistence import repository as repo
from service.persistence.db import transaction
from service.persistence.tables import CodecResult, Measure, Measured, SizeMeasure
from service.results.columns import COLUMNS, RESULT_MEASURES
from service.web.format import fmt_value
from tests.utils import API, REPO
from workers.measures import (
    BY_NAME,
    MEASURES,
    SUMMARY,
    CodecRow,
    MeasureInfo,
    RunMeasures,
    SizeMeasures,
)

REQUIRED = {"mae": 0.05, "mse": 0.004, "psnr": 23.98, "ssim": 0.7, "n_images": 16,
            "training_time_s": 2.0, "params": 10, "latent_dim": 8,
            "compression_ratio": 384.0, "compression_ratio_bytes": 96.0}


def _kind(column_type: object) -> type:
    if isinstance(column_type, Integer | BigInteger):
        return int
    assert isinstance(column_type, Measured), f"{column_type!r}: a float measure keeps NaN"
    return float


def test_the_measures_table_and_the_database_columns_are_equal() -> None:
    columns = {c.name: c for c in Measure.__table__.columns if c.name != "run_id"}
    assert set(columns) == set(BY_NAME) == set(RunMeasures.model_fields)
    for m in MEASURES:
        column = columns[m.name]
        assert (_kind(column.type), column.nullable) == (m.kind, m.nullable), m.name


def test_the_codec_row_and_its_database_columns_are_equal() -> None:
    columns = {c.name: c for c in CodecResult.__table__.columns
               if c.name not in ("id", "run_id")}
    assert set(columns) == set(CodecRow.model_fields)
    for name, field in CodecRow.model_fields.items():
        assert columns[name].nullable == (type(None) in get_args(field.annotation)), name


def test_the_size_measures_and_their_database_columns_are_equal() -> None:
    columns = {c.name: c for c in SizeMeasure.__table__.columns
               if c.name not in ("id", "run_id")}
    assert set(columns) == set(SizeMeasures.model_fields)
    for name, field in SizeMeasures.model_fields.items():
        assert columns[name].nullable == (type(None) in get_args(field.annotation)), name
    # each (but the size) is a measure of the table, as a results column reads it
    assert set(SizeMeasures.model_fields) - {"size"} <= set(BY_NAME)


def test_the_table_is_consistent_with_where_it_is_used() -> None:
    for m in MEASURES:
        fmt_value(m.format, 1.5 if m.kind is float else 3)  # a format the pages know
        if m.expectable:  # a bound reads the run's results row by the measure's name
            assert m.results and m.head == m.name, m.name
        if m.study or m.page or m.aggregated:
            assert m.results, m.name
        if m.tied_best:
            assert m.better is not None and m.aggregated, m.name
    assert {name for name, _, _ in SUMMARY} <= set(BY_NAME)
    assert all(head in COLUMNS for head in RESULT_MEASURES)


def test_a_key_the_contract_does_not_know_is_refused_naming_it() -> None:
    """A misspelt measure is an error, never a value silently dropped."""
    with pytest.raises(ValidationError, match="pnsr\n  Extra inputs are not permitted"):
        RunMeasures(**REQUIRED, pnsr=24.0)
    row = {"codec": "jpeg", "kind": "curve", "status": None, "quality": 50.0,
           "target_bytes": None, "min_bytes_per_image": None, "max_bytes_per_image": None,
           "bytes_per_image": 300.0, "bpp": 2.3, "mse": 0.01, "mae": 0.05, "psnr": 20.0,
           "ssim": 0.6, "classifier_accuracy": None, "n_images": 16}
    assert CodecRow(**row).bpp == 2.3
    with pytest.raises(ValidationError, match="bytes_per_imag\n  Extra inputs are not"):
        CodecRow(**row, bytes_per_imag=300.0)
    with pytest.raises(ValidationError, match="mse\n  Field required"):
        RunMeasures(**{k: v for k, v in REQUIRED.items() if k != "mse"})


def test_the_trainer_reports_every_measure_and_refuses_an_unknown_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate_run on a tiny untrained model: what it reports is the contract (the two
    measures stored since this contract, native_pixels and rd_lambda, included), and a
    measure the models layer adds without a field fails the run instead of vanishing."""
    import models.metrics
    from models.codecs import DEFAULT_CURVE_QUALITIES
    from models.data import load_dataset
    from models.recipes import build_model
    from models.training import TrainResult
    from workers.pipeline import evaluate_run
    from workers.spec import RunSpec

    spec = RunSpec(model="baseline", dataset="synthetic", latent_dim=8, epochs=1,
                   batch_size=16, pretrained=False, data={"train_limit": 32, "test_limit": 8},
                   classifier={"enabled": False}, compression={"codecs": ["jpeg"]})
    data = load_dataset("synthetic", "/unused", train_limit=32, test_limit=8, seed=0)
    result = TrainResult(build_model("baseline", latent_dim=8, pretrained=False), [], 1.5)
    evaluation = evaluate_run(spec, result, data, None, None)
    m = evaluation.measures
    assert (m.native_pixels, m.raw_bytes_per_image, m.rd_lambda) == (1024, 3072, None)
    assert m.bpp == 8 * m.bytes_per_image / m.native_pixels
    assert (m.n_images, m.latent_dim, m.training_time_s, m.quant_bits) == (8, 8, 1.5, 8)
    assert m.stream_bytes == len(evaluation.compression.stream)
    unset = {k for k, v in m.model_dump().items() if v is None}
    # The pipeline's times, what the classifier measures, λ of the other variant only.
    # MS-SSIM: the model-space images (32 px) are too small for its 5 scales; k-means:
    # 8 test codes cannot make 10 clusters (the probes, fitted on 32 codes, are measured).
    assert unset == {"search_time_s", "wall_time_s", "classifier_accuracy",
                     "original_accuracy", "q_accuracy", "rd_lambda", "ms_ssim", "q_ms_ssim",
                     "cluster_nmi", "q_cluster_nmi"}
    assert 0 <= m.probe_knn_accuracy <= 1 and 0 <= m.probe_linear_accuracy <= 1
    # The q_ probes read the codes the decoder gets back from the stored stream: the same
    # probes on the fitted quantiser's levels, computed here from compression.json alone.
    from models.probes import probe_codes
    from models.quantize import LatentQuantizer, encode_latents

    q = LatentQuantizer.from_dict(evaluation.compression.meta["quantizer"])
    levels = [q.dequantize(q.quantize(encode_latents(result.model, split))).numpy()
              for split in (data.train, data.test)]
    expected = probe_codes(levels[0], data.train.labels.numpy(), levels[1],
                           data.test.labels.numpy(), n_classes=data.num_classes, seed=0)
    assert (m.q_probe_knn_accuracy, m.q_probe_linear_accuracy) == (
        expected["probe_knn_accuracy"], expected["probe_linear_accuracy"])
    assert m.psnr_per_image >= m.psnr and m.q_psnr_per_image >= m.q_psnr  # Jensen
    assert [(c.codec, c.kind) for c in evaluation.codecs] == \
        [("jpeg", "matched")] + [("jpeg", "curve")] * len(DEFAULT_CURVE_QUALITIES)

    facts = models.metrics.model_facts
    monkeypatch.setattr(models.metrics, "model_facts",
                        lambda model, latent: {**facts(model, latent), "flops": 1.0e6})
    with pytest.raises(ValidationError, match="flops\n  Extra inputs are not permitted"):
        evaluate_run(spec, result, data, None, None)


def test_stored_measures_read_back_whole_with_the_schema_saying_what_each_is(
        client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json={
        "models": ["factorized_prior"], "datasets": ["mnist"], "lambdas": [0.01]}).json()
    run_id = exp["runs"][0]["id"]
    measures = RunMeasures(**REQUIRED, native_pixels=784, rd_lambda=0.01, q_psnr=math.inf)
    codec = CodecRow(codec="webp", kind="matched", status="matched", quality=41.5,
                     target_bytes=120.0, min_bytes_per_image=60.0, max_bytes_per_image=900.0,
                     bytes_per_image=121.0, bpp=1.2347, mse=0.01, mae=0.05, psnr=20.0,
                     ssim=0.6, classifier_accuracy=0.5, n_images=16)
    with transaction(context_of(client.app).sessions) as s:
        repo.record_measures(s, run_id=run_id, measures=measures, codecs=[codec])
    answered = client.get(f"{API}/runs/{run_id}").json()["measures"]
    assert answered == {**measures.model_dump(), "q_psnr": "Infinity"}
    with context_of(client.app).sessions() as s:
        stored = repo.codec_results(s, experiment_id=exp["id"])
        assert [CodecRow.model_validate(c) for _, c in stored] == [codec]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["RunMeasures"]
    assert list(schema["properties"]) == [m.name for m in MEASURES]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["bpp"]["description"] == (
        "8 · bytes_per_image / native_pixels: bits per pixel of the native image [bit/px]")
    assert set(schema["required"]) == set(REQUIRED)


def test_the_results_heads_are_the_studys_columns_then_each_group(client: TestClient
                                                                  ) -> None:
    """The CSV head and the aggregate's columns, byte for byte, as the table orders them
    (a new measure joins them where the table places it)."""
    exp = client.post(f"{API}/experiments", json={
        "models": ["baseline"], "datasets": ["synthetic"], "seeds": [0, 1]}).json()
    csv = client.get(f"{API}/experiments/{exp['id']}/results", params={"format": "csv"}).text
    assert csv.splitlines()[0] == (
        "run_id,experiment,kind,model,codec,dataset,latent_dim,rd_lambda,seed,mae,mse,psnr,"
        "ssim,psnr_per_image,ms_ssim,classifier_accuracy,original_accuracy,quant_bits,q_mse,"
        "q_psnr,q_ssim,q_psnr_per_image,q_ms_ssim,q_accuracy,probe_knn_accuracy,"
        "probe_linear_accuracy,cluster_nmi,q_probe_knn_accuracy,q_probe_linear_accuracy,"
        "q_cluster_nmi,bytes_per_image,bpp,raw_bytes_per_image,side_info_bytes,codec_quality,"
        "codec_status,training_time_s,search_time_s,wall_time_s,lr,"
        "nominal_compression_ratio,params,status")
    agg = client.get(f"{API}/experiments/{exp['id']}/results",
                     params={"aggregate": "seed"}).json()["columns"]
    measured = ["mae", "mse", "psnr", "ssim", "psnr_per_image", "ms_ssim",
                "classifier_accuracy", "original_accuracy", "q_mse", "q_psnr", "q_ssim",
                "q_psnr_per_image", "q_ms_ssim", "q_accuracy", "probe_knn_accuracy",
                "probe_linear_accuracy", "cluster_nmi", "q_probe_knn_accuracy",
                "q_probe_linear_accuracy", "q_cluster_nmi", "bytes_per_image", "bpp",
                "training_time_s", "search_time_s", "wall_time_s", "lr", "params"]
    assert agg == ["experiment", "model", "dataset", "latent_dim", "rd_lambda", "runs",
                   "seeds", *(f"{m}_{s}" for m in measured for s in ("mean", "std", "n")),
                   *(f"{m}_tied_best" for m in ("mae", "mse", "psnr", "ssim",
                                                 "classifier_accuracy"))]


def test_the_terminal_writes_non_finite_measures_as_the_answer_has_them() -> None:
    """A perfect reconstruction's PSNR is "Infinity" in the JSON the CLI reads: its table
    shows the token (it used to stop with a format error)."""
    import io

    from rich.console import Console

    from service.cli.progress import results_table
    from workers.measures import ResultsTable

    table = ResultsTable(experiment_id=1, columns=["run_id"], rows=[{
        "run_id": 3, "model": "baseline", "dataset": "synthetic", "status": "succeeded",
        "mse": 0.0, "mae": 0.0, "psnr": "Infinity", "ssim": 1.0, "lr": 0.001,
        "classifier_accuracy": "NaN", "training_time_s": 61.0}])
    out = io.StringIO()
    Console(file=out, width=200).print(results_table(table))
    assert out.getvalue().splitlines()[4].split() == [
        "3", "baseline", "synthetic", "succeeded", "0.000000", "0.000000", "Infinity",
        "1.0000", "NaN", "1:01", "0.001"]


def _readme_row(m: MeasureInfo) -> str:
    results = (f"`{m.head}`" if m.head != m.name else "yes") if m.results else ""
    better = {"min": "; lower is better", "max": "; higher is better"}.get(m.better or "", "")
    flags = " | ".join("yes" if f else "" for f in (m.aggregated, m.expectable, m.orderable))
    return (f"| `{m.name}` | {m.unit} | {m.span_text} | {m.long_title}: {m.description}{better} "
            f"| {results} | {flags} |")


def test_the_readmes_table_of_measures_is_the_table() -> None:
    """The user's manual lists every measure as the contract has it."""

    text = (REPO / "README.md").read_text()
    section = text.split("### Measures\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows == [_readme_row(m) for m in MEASURES]
