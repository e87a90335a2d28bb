"""Search over run settings (issue 26): the spec's ``search`` block, samples as run rows
proposed by the dispatcher from the database alone, and pruning — at the API, dispatcher
and database level, without Ray (the end-to-end run is in test_search_training.py)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.context import context_of
from service.orchestration.dispatcher import Dispatcher
from service.orchestration.sampling import prune_decision
from service.persistence import repository as repo
from service.persistence.db import transaction
from service.persistence.tables import EpochMetric, Run, Status
from service.search import SEARCHABLE, asha_stops, prune_reason
from tests.service.orchestration.test_dispatcher import FakeExecutor
from tests.utils import API
from workers.measures import RunMeasures
from workers.store import RunPruned

# The issue's spec, exactly (tiny budgets on top).
ISSUE_SEARCH = {
    "algorithm": "tpe", "metric": "q_psnr", "mode": "max", "num_samples": 12,
    "max_concurrent": 4, "seed": 0, "pruner": "asha",
    "space": {"latent_dim": {"randint": [16, 512]},
              "lr": {"loguniform": [1.0e-4, 1.0e-2]},
              "rd_lambda": {"loguniform": [1.0e-3, 1.0e-1]},
              "bits": {"choice": [4, 6, 8]}}}


def search_spec(search: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {"models": ["baseline", "factorized_prior"], "datasets": ["synthetic"],
            "epochs": 3, "batch_size": 32, "pretrained": False,
            "data": {"train_limit": 256, "test_limit": 64},
            "classifier": {"enabled": False},
            "search": copy.deepcopy(search or ISSUE_SEARCH), **fields}


@pytest.fixture()
def settings(db_url: str, tmp_path: Path):
    from service.settings import Settings

    return Settings(home=tmp_path / "home", database_url=db_url, start_dispatcher=False,
                    max_runs_per_experiment=24, max_epochs=50)


def dispatcher(client: TestClient, max_in_flight: int = 100) -> tuple[Dispatcher, FakeExecutor]:
    executor = FakeExecutor()
    ctx = context_of(client.app)
    return Dispatcher(ctx.sessions, executor, max_in_flight=max_in_flight,
                      artifacts=ctx.artifacts), executor


def sample_rows(client: TestClient, exp_id: int) -> list[Run]:
    with context_of(client.app).sessions() as s:
        rows = s.scalars(select(Run).where(Run.experiment_id == exp_id)
                         .order_by(Run.model, Run.sample)).all()
        s.expunge_all()
    return list(rows)


def finish(client: TestClient, run: Run, q_psnr: float | None,
           status: Status = Status.succeeded) -> None:
    """The run ends as its driver would record it (a measure row, then the status)."""
    with transaction(context_of(client.app).sessions) as s:
        if q_psnr is not None:
            repo.record_measures(s, run_id=run.id, measures=RunMeasures(
                mae=0.05, mse=0.004, psnr=24.0, ssim=0.7, n_images=64, training_time_s=2.0,
                params=10, latent_dim=run.latent_dim, compression_ratio=384.0,
                compression_ratio_bytes=96.0, q_psnr=q_psnr, bpp=1.0,
                bytes_per_image=98.0))
        repo.finish_run(s, run_id=run.id, status=status, only_if=(Status.running,
                                                                   Status.queued))


def values(run: Run) -> dict[str, Any]:
    return {name: SEARCHABLE[name].get(run.spec) for name in ISSUE_SEARCH["space"]}


def check_sample(run: Run) -> None:
    """Its sampled values sit in its run spec, within the space's bounds and types."""
    v = values(run)
    assert isinstance(v["latent_dim"], int) and 16 <= v["latent_dim"] < 512
    assert run.latent_dim == v["latent_dim"]  # the row's column says the same
    assert isinstance(v["lr"], float) and 1e-4 <= v["lr"] <= 1e-2
    assert run.spec["lr_search"]["method"] == "fixed"  # a searched lr is trained as is
    assert v["bits"] in (4, 6, 8) and isinstance(v["bits"], int)
    if run.model == "factorized_prior":
        assert isinstance(v["rd_lambda"], float) and 1e-3 <= v["rd_lambda"] <= 1e-1
        assert run.rd_lambda == v["rd_lambda"]
    else:  # applied where the recipe uses λ only
        assert v["rd_lambda"] is None and run.rd_lambda is None


# --- the spec ------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "loc", "words"), [
    (lambda s: s.update(latent_dim=64), ["search", "space", "latent_dim"], "also given"),
    (lambda s: s.update(latent_dims=[64, 128]), ["latent_dims"], "do not combine"),
    (lambda s: s.update(lr_search={"lr": 0.01}), ["search", "space", "lr"], "also given"),
    (lambda s: s.update(lr_search={"method": "tune"}), ["search", "space", "lr"], "fixed"),
    (lambda s: s.update(compression={"bits": 8}), ["search", "space", "bits"], "also given"),
    (lambda s: s["search"]["space"].update(seed={"choice": [1, 2]}),
     ["search", "space", "seed"], "cannot be searched"),
    (lambda s: s["search"].update(metric="psnrr"), ["search", "metric"], "unknown measure"),
    (lambda s: s["search"]["space"].update(lr={"normal": [0, 1]}),
     ["search", "space", "lr", "normal"], "Extra inputs"),
    (lambda s: s["search"]["space"].update(latent_dim={"randint": [512, 16]}),
     ["search", "space", "latent_dim"], "empty"),
    (lambda s: s["search"]["space"].update(latent_dim={"randint": [16, 9000]}),
     ["search", "space", "latent_dim"], "8192"),
    (lambda s: s["search"]["space"].update(latent_dim={"uniform": [16, 512]}),
     ["search", "space", "latent_dim"], "randint or choice"),
    (lambda s: s["search"]["space"].update(lr={"loguniform": [0, 0.1]}),
     ["search", "space", "lr"], "> 0"),
    (lambda s: s["search"]["space"].update(bits={"choice": [4, 5]}),
     ["search", "space", "bits"], "not a valid bits"),
    (lambda s: s.update(models=["baseline"]), ["search", "space", "rd_lambda"], "λ"),
    (lambda s: s["search"].update(algorithm="grid"), ["search", "space", "latent_dim"],
     "choice entries only"),
    (lambda s: s["search"].update(metric="bpp"), ["search", "pruner"], "pruner none"),
    # A metric no run of a (model, dataset) can have: refused, not every sample metricless.
    (lambda s: s["search"].update(metric="classifier_accuracy"), ["search", "metric"],
     "cannot be measured for baseline on synthetic: the spec trains no reference classifier"),
    (lambda s: s["search"].update(metric="q_ms_ssim"), ["search", "metric"],
     "q_ms_ssim cannot be measured for baseline on synthetic: MS-SSIM's 5 scales"),
    (lambda s: s["search"].update(metric="rd_lambda", mode="min", pruner="none"),
     ["search", "metric"], "rd_lambda cannot be measured for baseline on synthetic"),
    (lambda s: s["search"].update(metric="quant_bits", mode="min"), ["search", "metric"],
     "quant_bits cannot be measured for factorized_prior on synthetic: its learned entropy"),
    # A numeric field's choices are numbers (a string or a bool is not an LR).
    (lambda s: s["search"]["space"].update(lr={"choice": [1e-3, "0.01"]}),
     ["search", "space", "lr"], "'0.01' is not a valid lr"),
    (lambda s: s["search"]["space"].update(lr={"choice": [1e-3, True]}),
     ["search", "space", "lr"], "True is not a valid lr"),
    (lambda s: s["search"]["space"].update(latent_dim={"choice": [16, "32"]}),
     ["search", "space", "latent_dim"], "'32' is not a valid latent_dim"),
    (lambda s: (s.pop("batch_size"),
                s["search"]["space"].update(batch_size={"choice": [32, 512]})),
     ["search", "space", "batch_size"], "train_limit"),
])
def test_a_bad_search_is_a_422_naming_the_field_and_nothing_is_made(
        client: TestClient, change: Any, loc: list[Any], words: str) -> None:
    body = search_spec()
    change(body)
    answer = client.post(f"{API}/experiments", json=body)
    assert answer.status_code == 422, answer.text
    found = [e for e in answer.json()["detail"] if e["loc"][1:] == loc]
    assert found and words in found[0]["msg"], answer.json()["detail"]
    assert client.get(f"{API}/experiments").json()["items"] == []


def test_a_grid_search_with_more_samples_than_points_is_refused(client: TestClient) -> None:
    body = search_spec({"algorithm": "grid", "metric": "psnr", "num_samples": 7,
                        "space": {"bits": {"choice": [4, 8]},
                                  "latent_dim": {"choice": [8, 16, 32]}}})
    answer = client.post(f"{API}/experiments", json=body)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "search", "num_samples"]
    assert "6 points" in answer.json()["detail"][0]["msg"]


def test_the_run_limit_counts_the_samples(client: TestClient) -> None:
    body = search_spec({**ISSUE_SEARCH, "num_samples": 13})  # 26 runs > the limit of 24
    answer = client.post(f"{API}/experiments", json=body)
    assert answer.status_code == 422
    assert "26 runs (2 models × 1 datasets × 13 samples)" in answer.json()["detail"][0]["msg"]


def test_a_dry_run_lists_the_space_and_the_run_count(client: TestClient) -> None:
    answer = client.post(f"{API}/experiments?dry_run=true", json=search_spec())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["search"]["runs"] == 24 and body["estimate"]["runs"] == 24
    assert body["search"]["max_concurrent"] == 4
    assert body["search"]["space"] == [
        {"name": "latent_dim", "field": "latent_dim", "distribution": "randint",
         "values": [16, 512]},
        {"name": "lr", "field": "lr_search.lr", "distribution": "loguniform",
         "values": [1e-4, 1e-2]},
        {"name": "rd_lambda", "field": "rd_lambda", "distribution": "loguniform",
         "values": [1e-3, 1e-1]},
        {"name": "bits", "field": "compression.bits", "distribution": "choice",
         "values": [4, 6, 8]}]
    assert body["runs"] == [{"model": "baseline", "dataset": "synthetic", "samples": 12},
                            {"model": "factorized_prior", "dataset": "synthetic",
                             "samples": 12}]
    assert client.get(f"{API}/experiments").json()["items"] == []


# --- samples as run rows ---------------------------------------------------------------------


def test_the_issues_search_makes_24_runs_in_bounds_at_most_4_open_per_pair(
        client: TestClient) -> None:
    created = client.post(f"{API}/experiments", json=search_spec())
    assert created.status_code == 201, created.text
    exp = created.json()
    assert len(exp["runs"]) == 8  # max_concurrent per (model, dataset), at once
    d, executor = dispatcher(client)
    score = 20.0
    for _ in range(40):
        d.tick()
        rows = sample_rows(client, exp["id"])
        for model in ("baseline", "factorized_prior"):
            open_ = [r for r in rows if r.model == model and not r.status.finished]
            assert len(open_) <= 4
        running = [r for r in rows if r.status == Status.running]
        if not running:
            break
        for run in running[:3]:  # a few end each pass: slots free, TPE proposes
            score += 0.5
            finish(client, run, score)
    rows = sample_rows(client, exp["id"])
    assert len(rows) == 24
    for model in ("baseline", "factorized_prior"):
        mine = [r for r in rows if r.model == model]
        assert [r.sample for r in mine] == list(range(12))
        assert len({tuple(sorted(values(r).items())) for r in mine}) == 12
    for run in rows:
        check_sample(run)
        assert run.status == Status.succeeded
    assert client.get(f"{API}/experiments/{exp['id']}").json()["status"] == "succeeded"
    assert len(executor.submitted) == 24
    # The results table reads them as any runs, their sampled latent sizes included.
    results = client.get(f"{API}/experiments/{exp['id']}/results").json()
    assert sorted(r["latent_dim"] for r in results["rows"]) == sorted(r.latent_dim for r in rows)


def random_search(seed: int) -> dict[str, Any]:
    return {**ISSUE_SEARCH, "algorithm": "random", "seed": seed, "num_samples": 6,
            "max_concurrent": 2}


def run_to_the_end(client: TestClient, exp_id: int, order: int) -> list[dict[str, Any]]:
    """Drive the search to its end, finishing runs in an order that depends on ``order``;
    the samples' values by (model, index)."""
    d, _ = dispatcher(client)
    for step in range(50):
        d.tick()
        running = [r for r in sample_rows(client, exp_id) if r.status == Status.running]
        if not running:
            break
        pick = running[(step * order) % len(running)]
        finish(client, pick, float(step))
    return [{"model": r.model, "sample": r.sample, **values(r)}
            for r in sample_rows(client, exp_id)]


def test_a_seeded_random_search_draws_the_same_samples_whatever_the_timing(
        client: TestClient) -> None:
    first = client.post(f"{API}/experiments",
                        json=search_spec(random_search(7))).json()["id"]
    a = run_to_the_end(client, first, order=1)
    second = client.post(f"{API}/experiments",
                         json=search_spec(random_search(7))).json()["id"]
    b = run_to_the_end(client, second, order=3)
    other = client.post(f"{API}/experiments",
                        json=search_spec(random_search(8))).json()["id"]
    c = run_to_the_end(client, other, order=1)
    assert len(a) == 12 and a == b
    assert [x["lr"] for x in a] != [x["lr"] for x in c]  # the seed is what decides


def test_a_restart_mid_search_continues_to_exactly_num_samples(
        client: TestClient, settings: Any) -> None:
    """A service restarted mid-search (a new app, a new dispatcher on the same database)
    rebuilds the searcher from the rows: each pair ends with exactly num_samples samples,
    none repeated, none lost — the same values as an uninterrupted search."""
    from service.app import create_app

    body = search_spec({**ISSUE_SEARCH, "algorithm": "random", "num_samples": 5,
                        "max_concurrent": 2})
    exp = client.post(f"{API}/experiments", json=body).json()["id"]
    d, _ = dispatcher(client)
    d.tick()
    for run in [r for r in sample_rows(client, exp) if r.status == Status.running][:3]:
        finish(client, run, 30.0)
    d.tick()  # proposes into the freed slots, then the service stops
    before = sample_rows(client, exp)
    assert 4 < len(before) < 10
    with TestClient(create_app(settings)) as restarted:  # the new service's own pass
        d2, _ = dispatcher(restarted)
        for _ in range(20):
            d2.tick()
            running = [r for r in sample_rows(restarted, exp) if r.status == Status.running]
            if not running:
                break
            for run in running:
                finish(restarted, run, 31.0)
        after = sample_rows(restarted, exp)
    assert [(r.id, values(r)) for r in after if r.id in {b.id for b in before}] == \
        [(b.id, values(b)) for b in before]  # what was made stays as it was
    for model in ("baseline", "factorized_prior"):
        mine = [r for r in after if r.model == model]
        assert [r.sample for r in mine] == list(range(5))
        assert len({tuple(sorted(values(r).items())) for r in mine}) == 5
    uninterrupted = client.post(f"{API}/experiments", json=body).json()["id"]
    assert [{"model": r.model, "sample": r.sample, **values(r)} for r in after] == \
        run_to_the_end(client, uninterrupted, order=1)


def test_a_sample_index_is_made_once_per_model_and_dataset(client: TestClient) -> None:
    """Two proposers racing for one sample (two services on one database): the database
    refuses the second row of the same (experiment, model, dataset, sample)."""
    from sqlalchemy.exc import IntegrityError

    exp = client.post(f"{API}/experiments", json=search_spec(
        {**ISSUE_SEARCH, "algorithm": "random", "num_samples": 3, "max_concurrent": 1})
    ).json()["id"]
    first = sample_rows(client, exp)[0]
    with pytest.raises(IntegrityError), transaction(context_of(client.app).sessions) as s:
        s.add(Run(experiment_id=exp, model=first.model, dataset=first.dataset,
                  sample=first.sample, status=Status.queued, epochs_total=3,
                  latent_dim=first.latent_dim, seed=0, spec=first.spec))
    assert len(sample_rows(client, exp)) == 2


# --- pruning ---------------------------------------------------------------------------------


def test_asha_keeps_the_best_quarter_of_a_rung_and_prunes_the_hopeless() -> None:
    assert not asha_stops(0.5, [0.5])  # alone at its rung: nothing to compare
    assert asha_stops(0.9, [0.9, 0.1])  # the worse of two
    assert not asha_stops(0.1, [0.9, 0.1])
    assert asha_stops(math.nan, [math.nan])  # diverged
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    kept = [v for v in values if not asha_stops(v, values)]
    assert kept == [0.1, 0.2]  # the best 1/4 (Ray's ASHA cut, reduction factor 4)
    # Rungs at 1, 4, 16 …; never at the last epoch.
    assert prune_reason("asha", 2, 10, {2: 9.0}, [{2: 0.1}], []) is None
    assert prune_reason("asha", 4, 10, {4: 9.0}, [{4: 0.1}], []) is not None
    assert prune_reason("asha", 4, 4, {4: 9.0}, [{4: 0.1}], []) is None
    assert prune_reason("none", 1, 10, {1: math.inf}, [], []) is None


def test_median_prunes_below_the_completed_samples_median() -> None:
    done = [{1: 0.1, 2: 0.05}, {1: 0.2, 2: 0.1}, {1: 0.15, 2: 0.08}]
    assert prune_reason("median", 2, 5, {1: 0.5, 2: 0.4}, done, done) is not None
    assert prune_reason("median", 2, 5, {1: 0.1, 2: 0.07}, done, done) is None
    assert prune_reason("median", 2, 5, {1: 0.5, 2: 0.4}, done, done[:2]) is None  # startup


def test_the_store_prunes_a_weak_sample_at_its_epoch_and_it_is_not_failed(
        client: TestClient) -> None:
    from models.plan import EpochMetrics
    from service.orchestration.run_store import DbRunStore

    body = search_spec({**ISSUE_SEARCH, "algorithm": "random", "num_samples": 3,
                        "max_concurrent": 3}, models=["baseline"])
    body["search"]["space"].pop("rd_lambda")
    exp = client.post(f"{API}/experiments", json=body).json()["id"]
    ctx = context_of(client.app)
    d, _ = dispatcher(client)
    d.tick()
    good, bad, late = sample_rows(client, exp)

    def epoch(run: Run, n: int, mse: float) -> DbRunStore:
        store = DbRunStore(ctx.sessions, ctx.artifacts, run.id, attempt=run.attempt)
        store.record_epoch(EpochMetrics(epoch=n, phase="train", size=32, lr=1e-3,
                                        train_loss=mse, val_loss=mse, val_mse=mse,
                                        val_mae=mse, seconds=1.0, images_per_s=1.0))
        return store

    epoch(good, 1, 0.01)
    # Worse than the best 1/4 of the two at epoch 1: the write is kept, then the store
    # stops the pipeline with RunPruned (a RunCancelled), and the run reads cancelled.
    with pytest.raises(RunPruned, match="pruned at epoch 1"):
        epoch(bad, 1, 0.5)
    assert DbRunStore(ctx.sessions, ctx.artifacts, bad.id, attempt=bad.attempt).is_cancelled()
    with ctx.sessions() as s:
        assert prune_decision(s, run_id=good.id, epoch=1) is None
        row = s.get(Run, bad.id)
        assert row.status == Status.pruned and row.epoch == 1
        assert row.error.startswith("pruned at epoch 1 (asha)")
        kept = s.scalars(select(EpochMetric.epoch).where(EpochMetric.run_id == bad.id)).all()
        assert kept == [1]
    with pytest.raises(RunPruned, match="diverged"):
        epoch(late, 1, math.inf)
    with ctx.sessions() as s:
        assert s.get(Run, late.id).status == Status.pruned
    finish(client, good, 25.0)
    d.tick()
    experiment = client.get(f"{API}/experiments/{exp}").json()
    assert experiment["status"] == "succeeded"  # pruned is no failure
    assert sorted(r["status"] for r in experiment["runs"]) == ["pruned", "pruned", "succeeded"]


def test_the_experiment_answers_the_best_so_far_and_the_cli_prints_it(
        client: TestClient) -> None:
    from service.cli.progress import PlainFollower
    from service.client.schemas import ExperimentOut

    exp = client.post(f"{API}/experiments", json=search_spec(
        {**ISSUE_SEARCH, "algorithm": "random", "num_samples": 3, "max_concurrent": 3})
    ).json()["id"]
    d, _ = dispatcher(client)
    d.tick()
    rows = sample_rows(client, exp)
    for run, score in zip(rows, (21.0, 27.5, 23.0, 26.0, None, 22.0), strict=True):
        finish(client, run, score, Status.succeeded if score else Status.pruned)
    body = client.get(f"{API}/experiments/{exp}").json()
    search = body["search"]
    assert (search["metric"], search["mode"], search["planned"]) == ("q_psnr", "max", 6)
    assert [s["run_id"] for s in search["samples"]] == sorted(r.id for r in rows)
    assert search["best"]["run_id"] == rows[1].id and search["best"]["metric"] == 27.5
    assert search["best"]["values"] == values(rows[1])
    assert search["best_by_pair"]["factorized_prior/synthetic"]["metric"] == 26.0
    lines: list[str] = []
    PlainFollower(lines.append).update(ExperimentOut.model_validate(body))
    best = [line for line in lines if line.startswith("best so far")]
    assert best == [f"best so far: run {rows[1].id} baseline/synthetic q_psnr 27.5 "
                    f"(latent_dim={rows[1].latent_dim}, lr={values(rows[1])['lr']:.4g}, "
                    f"bits={values(rows[1])['bits']}); 6/6 samples made"]
    assert any(": pruned" in line for line in lines)


def _four_samples_one_pruned(client: TestClient, **fields: Any) -> tuple[int, list[Any]]:
    """A random search of 2 samples per (model, dataset), its four runs ended with q_psnr
    21.0, 27.5, pruned and 22.0: the experiment's id and its sample rows."""
    exp = client.post(f"{API}/experiments", json=search_spec(
        {**ISSUE_SEARCH, "algorithm": "random", "num_samples": 2, "max_concurrent": 2},
        **fields)).json()["id"]
    d, _ = dispatcher(client)
    d.tick()
    rows = sample_rows(client, exp)
    for run, score in zip(rows, (21.0, 27.5, None, 22.0), strict=True):
        finish(client, run, score, Status.succeeded if score else Status.pruned)
    return exp, rows


def test_the_experiment_page_draws_one_line_per_sample_and_the_best(
        client: TestClient) -> None:
    exp, rows = _four_samples_one_pruned(client)
    page = client.get(f"/experiments/{exp}")
    assert page.status_code == 200
    html = page.text
    assert html.count('<polyline class="pc-line') == 4
    assert html.count('class="pc-line pc-best"') == 1
    assert f'pc-line pc-best" data-run-id="{rows[1].id}"' in html
    assert [a for a in ("latent_dim", "lr", "rd_lambda", "bits", "q_psnr")
            if f'data-axis="{a}"' in html] == ["latent_dim", "lr", "rd_lambda", "bits", "q_psnr"]
    assert html.count('class="order-point"') == 3  # the metric of each finished sample
    assert f"run {rows[1].id}</a> baseline/synthetic, q_psnr 27.5" in html
    # Hovering a line or a point of the order chart says which sample it is: its values.
    v = values(rows[1])
    tip = (f"<title>run {rows[1].id} (succeeded): q_psnr 27.5; latent_dim={v['latent_dim']}, "
           f"lr={v['lr']:.4g}, bits={v['bits']}</title>")
    assert html.count(tip) == 2  # its line and its point
    assert f"<title>run {rows[2].id} (pruned): q_psnr not measured; " in html


def test_pruned_samples_are_not_results_the_experiments_verdict_waits_for(
        client: TestClient) -> None:
    """``expect`` over a search: the samples that finished pass, the pruned ones have no
    measures by design — the experiment PASSED, not pending for ever on them."""
    bounds = {"q_psnr": "> 20"}
    exp, rows = _four_samples_one_pruned(
        client, expect={"baseline/synthetic": bounds, "factorized_prior/synthetic": bounds})
    table = client.get(f"{API}/experiments/{exp}/results").json()
    assert table["expect"] == "PASSED"
    pruned = [r for r in table["rows"] if r["status"] == "pruned"]
    assert [(r["run_id"], r["expect"]) for r in pruned] == [(rows[2].id, None)]
