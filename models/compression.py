"""What an image really costs: a run's test set quantised, entropy-coded, decoded from the
stream and measured; and standard codecs at the same bytes.

:func:`compress_run` is called at evaluation (``workers.pipeline.evaluate_run``):

1. **Latent coder.** For models without an entropy model of their own: a
   :class:`LatentQuantizer` and a :class:`LatentEntropyModel` fitted on the encoder's
   latents of the first :data:`FIT_IMAGES` *training* images; the test latents are
   quantised and coded into one stream. For those with one (``factorized_prior``): the
   model's own learned entropy bottleneck (:mod:`models.factorized_prior`), whose tables
   are part of its weights.
2. **Decode from the stream** (not from the symbols kept in memory) and measure MSE, MAE,
   PSNR, SSIM and classifier accuracy of those images: the ``q_*`` measures.
3. **Rate:** ``bytes_per_image = stream bytes / test images`` (header included),
   ``bpp = 8 · bytes_per_image / (H · W)`` of the native image, beside the raw uint8 size
   of that image; side information (model tables, quantiser) is counted apart, per run.
4. **Codecs** (:mod:`models.codecs`): each available codec matched to the run's
   ``bytes_per_image`` (per-image quality), and a curve over fixed qualities, measured in
   the same space with the same classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from models.architectures import Autoencoder
from models.codecs import (
    DEFAULT_CODECS,
    DEFAULT_CURVE_QUALITIES,
    available_codecs,
    curve_points,
    decode_batch,
    match_size,
    to_model_space,
)
from models.data import DataSplits, ImageSet, to_float
from models.entropy import LatentEntropyModel, bits_per_pixel, native_format
from models.metrics import Measures, measure_outputs, measure_whole
from models.quantize import LatentQuantizer, decode_symbols, encode_latents

FIT_IMAGES = 10_000  # training images whose latents fit the quantiser and entropy model
STREAM_ARTIFACT = "latents-test.bin"
# compression.json's "coder": the model's own learned entropy model, or a fitted quantiser.
OWN_CODER, FITTED_CODER = "factorized_prior", "quantized_latent"
META_ARTIFACT = "compression.json"


@dataclass
class CompressionReport:
    """The measured compression of one run's test set."""

    measures: dict[str, Any]  # q_* measures, bytes_per_image, bpp, raw bytes, bits, …
    stream: bytes  # the test set's stream, as stored (``latents-test.bin``)
    meta: dict[str, Any]  # how to decode it: quantiser, entropy model, definitions
    decoded: torch.Tensor  # (N, 3, 32, 32): the images the q_* measures were taken on
    codec_rows: list[dict[str, Any]] = field(default_factory=list)
    # The encoder's float codes of what was coded, (N, D) float32 on the CPU — the test
    # images, or their tiles when the data is evaluated whole (T, D): encoded once here
    # and shared with the probes (models.probes.latent_probes' test_codes).
    codes: torch.Tensor | None = None


def _q_measures(m: Measures) -> dict[str, Any]:
    return {"q_mse": m.mse, "q_mae": m.mae, "q_psnr": m.psnr, "q_ssim": m.ssim,
            "q_accuracy": m.classifier_accuracy, "q_psnr_per_image": m.psnr_per_image,
            "q_ms_ssim": m.ms_ssim}


def _rate(stream_bytes: int, n: int, dataset: str, images: ImageSet | None = None
          ) -> dict[str, Any]:
    """The rate measures of a stream of ``n`` images. ``images`` (whole, any size): bpp
    over their real pixels, 8 · stream bytes / Σ H_i·W_i (each image's own bpp when they
    share a size), raw bytes and native pixels their means."""
    if images is not None:
        pixels = int(images.pixels().sum())
        channels = int(images.images.shape[1])
        return {"stream_bytes": stream_bytes, "bytes_per_image": stream_bytes / n,
                "bpp": 8.0 * stream_bytes / pixels,
                "raw_bytes_per_image": round(channels * pixels / n),
                "native_pixels": round(pixels / n)}
    fmt = native_format(dataset)
    per_image = stream_bytes / n
    return {"stream_bytes": stream_bytes, "bytes_per_image": per_image,
            "bpp": bits_per_pixel(per_image, fmt.hw), "raw_bytes_per_image": fmt.raw_bytes,
            "native_pixels": fmt.pixels}


def latent_coder(model: Autoencoder, train: ImageSet, bits: int, *,
                 device: torch.device | str | None = None
                 ) -> tuple[LatentQuantizer, LatentEntropyModel]:
    """Quantiser and entropy model fitted on the first :data:`FIT_IMAGES` training
    images' latents (never the test set)."""
    z = encode_latents(model, train.images[:FIT_IMAGES], device=device)
    q = LatentQuantizer.fit(z, bits)
    return q, LatentEntropyModel.fit(q.quantize(z), bits)


def decode_stream(model: Autoencoder, meta: dict[str, Any], stream: bytes, *,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """The images a stored stream decodes to, from the run's model and ``compression.json``
    alone: (N, 3, 32, 32) float in [0, 1]."""
    if meta["coder"] == OWN_CODER:
        from models.factorized_prior import decompress

        return decompress(model, stream)  # type: ignore[arg-type]
    q = LatentQuantizer.from_dict(meta["quantizer"])
    em = LatentEntropyModel.from_dict(meta["entropy_model"])
    return decode_symbols(model, q, em.decode(stream), device=device)


def quantised_codes(meta: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the decoder gets back from a stream coded as ``meta`` (``compression.json``)
    describes, as a function of the float codes (N, D) → (N, D) float: ``round`` for a
    model's own entropy bottleneck (Ballé et al. 2017), the fitted quantiser's
    dequantised symbols otherwise."""
    if meta["coder"] == OWN_CODER:
        return torch.round
    q = LatentQuantizer.from_dict(meta["quantizer"])
    return lambda z: q.dequantize(q.quantize(z))


def compress_run(model: Autoencoder, data: DataSplits, *, dataset: str, bits: int = 8,
                 classifier: nn.Module | None = None, device: torch.device | str = "cpu",
                 codecs: tuple[str, ...] = DEFAULT_CODECS,
                 curve_qualities: tuple[int, ...] = DEFAULT_CURVE_QUALITIES
                 ) -> CompressionReport:
    """Quantise, code, decode and measure ``model`` on ``data.test``; codec rows beside it.
    A model with its own learned entropy model (``has_entropy_model``) codes its latent
    with it; any other has its latent quantised and coded by a model fitted here. The
    test images are encoded once; their float codes come back in the report (``codes``)
    for the probes."""
    test = data.test
    n = len(test)
    coded, tiling = test, None
    if data.whole:  # every image whole, as tiles of the crop (models.tiles)
        from models.tiles import to_tiles

        coded, tiling = to_tiles(test, data.crop)
    codes = encode_latents(model, coded, device=device)  # (N, D): the one encoding
    if model.has_entropy_model:
        from models.factorized_prior import compress_symbols

        # round(y): the symbols of its own bottleneck (models.factorized_prior.latent_symbols)
        stream, _ = compress_symbols(model.entropy_bottleneck,  # type: ignore[arg-type]
                                     torch.round(codes).to(torch.int64))
        meta: dict[str, Any] = {
            "coder": OWN_CODER, "bits": None,
            "entropy_model": "the model's learned factorised entropy bottleneck (Ballé et "
                             "al. 2017); its tables are computed from the weights in "
                             "model.pt, so it carries no side information of its own",
            "side_info_bytes": 0}
        side = 0
    else:
        q, em = latent_coder(model, data.train, bits, device=device)
        stream = em.encode(q.quantize(codes))
        meta = {"coder": FITTED_CODER, "bits": bits, "quantizer": q.as_dict(),
                "entropy_model": em.as_dict(), "fit_images": min(len(data.train), FIT_IMAGES),
                "side_info_bytes": q.side_info_bytes + em.side_info_bytes}
        side = q.side_info_bytes + em.side_info_bytes
    decoded = decode_stream(model, meta, stream, device=device)
    if tiling is not None:
        from models.tiles import from_tiles

        measured = measure_whole(from_tiles(decoded, tiling), test, device=device,
                                 classifier=classifier)
        meta["tiles"] = {"crop": tiling.crop, "grid": tiling.grid, "sizes": tiling.sizes,
                         "padding": "last row and column repeated; never measured or "
                                    "counted"}
    else:
        measured = measure_outputs(decoded, test, device=device, classifier=classifier,
                                   size=data.crop)
    rate = _rate(len(stream), n, dataset, test if tiling is not None else None)
    meta.update({"stream": STREAM_ARTIFACT, "n_images": n, **rate,
                 "definitions": {
                     "bytes_per_image": "stream bytes (header included) / test images",
                     "bpp": "8 * bytes_per_image / (H * W) of the native image",
                     "side_info_bytes": "per run, not per image: quantiser (2 float32) "
                                        "and per-dimension model tables (2 float32 each)",
                     "q_measures": "images decoded from the stream, in model space "
                                   "(3x32x32, [0, 1])"}})
    measures = {**_q_measures(measured), **rate, "quant_bits": meta["bits"],
                "side_info_bytes": side}
    rows = codec_rows(test, measures["bytes_per_image"], classifier=classifier,
                      device=device, codecs=codecs, curve_qualities=curve_qualities,
                      whole=data.whole, size=data.crop)
    return CompressionReport(measures, stream, meta, decoded, rows, codes)


def _codec_row(codec: str, kind: str, files: list[bytes], images: ImageSet,
               classifier: nn.Module | None, device: torch.device | str, whole: bool,
               size: int, **extra: Any) -> dict[str, Any]:
    channels = images.images.shape[1]
    if whole or images.sizes is not None:  # each image whole, at its real size
        from models.codecs import decode

        m = measure_whole([to_float(decode(f, channels)[None], None)[0] for f in files],
                          images, device=device, classifier=classifier)
    else:
        decoded = to_model_space(decode_batch(files, channels), size)
        m = measure_outputs(decoded, images, device=device, classifier=classifier,
                            size=size)
    pixels = float(images.pixels().float().mean())
    per_image = sum(len(f) for f in files) / len(files)
    return {"codec": codec, "kind": kind, "bytes_per_image": per_image,
            "bpp": 8.0 * per_image / pixels, "mse": m.mse, "mae": m.mae, "psnr": m.psnr,
            "ssim": m.ssim, "classifier_accuracy": m.classifier_accuracy,
            "n_images": m.n_images, "psnr_per_image": m.psnr_per_image, "ms_ssim": m.ms_ssim,
            **extra}


def codec_rows(images: ImageSet, target_bytes: float, *, classifier: nn.Module | None,
               device: torch.device | str = "cpu",
               codecs: tuple[str, ...] = DEFAULT_CODECS,
               curve_qualities: tuple[int, ...] = DEFAULT_CURVE_QUALITIES,
               whole: bool = False, size: int = 32) -> list[dict[str, Any]]:
    """Each of ``codecs`` that this Pillow can write (others are skipped) matched to
    ``target_bytes`` (kind ``matched``, with its
    status) and over ``curve_qualities`` (kind ``curve``), with the same measures as a
    model row. Sizes are whole files; distortion in model space (see models.codecs), or
    with ``whole`` (or images of differing sizes) over each whole image's real pixels,
    as the model's tiles are measured."""
    rows = []
    for codec in [c for c in codecs if c in available_codecs()]:
        r = match_size(images, codec, target_bytes)
        rows.append(_codec_row(codec, "matched", r.files, images, classifier, device, whole,
                               size, target_bytes=target_bytes, status=r.status,
                               quality=sum(r.qualities) / len(r.qualities),
                               min_bytes_per_image=r.min_mean_bytes,
                               max_bytes_per_image=r.max_mean_bytes))
        for p in curve_points(images, codec, list(curve_qualities)):
            rows.append(_codec_row(codec, "curve", p.files, images, classifier, device, whole,
                                   size, target_bytes=None, status=None, quality=float(p.quality),
                                   min_bytes_per_image=None, max_bytes_per_image=None))
    return rows
