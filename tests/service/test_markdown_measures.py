"""The Markdown study table shows the field's measures where a dataset's rows have them
(per-image PSNR, MS-SSIM, the probes of the codes), and says which PSNR is which."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.context import context_of
from service.persistence import repository as repo
from service.persistence.db import transaction
from tests.utils import API
from workers.measures import RunMeasures

REQUIRED = {"mae": 0.05, "mse": 0.004, "ssim": 0.7, "n_images": 16, "training_time_s": 2.0,
            "params": 10, "latent_dim": 8, "compression_ratio": 384.0,
            "compression_ratio_bytes": 96.0, "psnr": 23.98, "q_psnr": 23.5,
            "bytes_per_image": 98.0, "bpp": 0.77}
HEAD = ["MAE", "MSE", "PSNR, split-level (dB)", "SSIM", "PSNR, per-image mean (dB)"]
# Labelled 32-px images: the probes, no MS-SSIM.
SYNTHETIC = [*HEAD, "Classifier acc.", "Quantised PSNR, split-level (dB)",
             "Quantised PSNR, per-image mean (dB)", "Quantised acc.", "k-NN probe acc.",
             "Linear probe acc.", "Cluster NMI", "Quantised k-NN probe",
             "Quantised linear probe", "Quantised cluster NMI", "Bytes / image", "bpp",
             "Train time"]
# Unlabelled photos of 300 px and more, whole: MS-SSIM, no probes.
PHOTOS = [*HEAD, "MS-SSIM", "Classifier acc.", "Quantised PSNR, split-level (dB)",
          "Quantised PSNR, per-image mean (dB)", "Quantised MS-SSIM", "Quantised acc.",
          "Bytes / image", "bpp", "Train time"]


def _heads(markdown: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")]
            for line in markdown.splitlines() if line.startswith("| Method |")]


def test_the_markdown_table_has_each_measure_its_rows_have(client: TestClient) -> None:
    exp = client.post(f"{API}/experiments", json={
        "models": ["baseline"], "datasets": ["synthetic", "photos"], "seeds": [0, 1]}).json()
    grid = [(d, seed) for d in ("synthetic", "photos") for seed in (0, 1)]  # run order
    runs = {point: r["id"] for point, r in zip(grid, exp["runs"], strict=True)}
    probes = {"probe_knn_accuracy": 0.61, "probe_linear_accuracy": 0.72, "cluster_nmi": 0.33,
              "q_probe_knn_accuracy": 0.6, "q_probe_linear_accuracy": 0.7,
              "q_cluster_nmi": 0.31}
    with transaction(context_of(client.app).sessions) as s:
        for seed in (0, 1):
            repo.record_measures(s, run_id=runs[("synthetic", seed)], measures=RunMeasures(
                **REQUIRED, psnr_per_image=24.5 + seed, q_psnr_per_image=24.0, **probes))
            repo.record_measures(s, run_id=runs[("photos", seed)], measures=RunMeasures(
                **REQUIRED, psnr_per_image=25.0, q_psnr_per_image=24.75,
                ms_ssim=0.91 + seed / 100, q_ms_ssim=0.9))
    url = f"{API}/experiments/{exp['id']}/results"
    md = client.get(url, params={"format": "markdown"}).text
    assert _heads(md) == [["Method", "Latent", "Seed", *SYNTHETIC, "LR", "Status"],
                          ["Method", "Latent", "Seed", *PHOTOS, "LR", "Status"]]
    # The synthetic run of seed 0: its per-image PSNR and probes in their columns.
    row = next(line for line in md.splitlines() if line.startswith("| Baseline | 1000 | 0 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3 + SYNTHETIC.index("PSNR, per-image mean (dB)")] == "24.50"
    assert cells[3 + SYNTHETIC.index("Linear probe acc.")] == "0.7200"
    assert cells[3 + SYNTHETIC.index("Quantised cluster NMI")] == "0.3100"
    assert "split-level: 10·log10(1 / MSE) of the whole split's MSE; PSNR, per-image " \
           "mean: the mean of each image's PSNR (CompressAI's convention" in md
    agg = client.get(url, params={"format": "markdown", "aggregate": "seed"}).text
    assert _heads(agg) == [["Method", "Latent", "n", *SYNTHETIC], ["Method", "Latent", "n",
                                                                   *PHOTOS]]
    assert "| 0.9150 ± 0.0071 |" in agg  # the photos' MS-SSIM over the two seeds
    # Where there is room, the run's page and the rate–distortion tab say it in words.
    page = client.get(f"/runs/{runs[('synthetic', 0)]}").text
    assert "<dt>PSNR, split-level (dB)</dt>" in page
    assert "<dt>PSNR, per-image mean: CompressAI&#39;s convention (dB)</dt>" in page
    rd = client.get(f"/experiments/{exp['id']}/rate_distortion").text
    assert '<option value="psnr">PSNR, split-level (dB)</option>' in rd
    assert '<option value="psnr_per_image">PSNR, per-image mean (dB)</option>' in rd
