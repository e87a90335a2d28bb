"""The GPU study benchmark keeps working: its CPU-sized mode runs on the session's Ray head."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from service.orchestration.ray_head import LocalRayHead
from tests.utils import REPO

ROOT = REPO


def test_gpu_study_small_runs_every_run_and_reports_against_the_target(
        ray_head: LocalRayHead) -> None:
    out = subprocess.run(
        [sys.executable, "bench/gpu_study.py", "--small", "--address", ray_head.dashboard_url,
         "--timeout", "600"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=os.environ.copy())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = re.findall(r"^(\w+/\w+)\s+(\w+)\s+(\d+)\s+(\d+)\s", out.stdout, re.MULTILINE)
    # 2 models × (mnist, synthetic), each succeeded with its one epoch at a real throughput
    assert sorted(r[0] for r in rows) == ["baseline/mnist", "baseline/synthetic",
                                          "pixel_shuffle/mnist", "pixel_shuffle/synthetic"]
    assert all(status == "succeeded" and epochs == "1" and int(ips) > 0
               for _, status, epochs, ips in rows), out.stdout
    assert re.search(r"total wall time [\d.]+ s against the target of 600 s", out.stdout)
    assert "GPU utilisation" in out.stdout or "GPU 0:" in out.stdout
