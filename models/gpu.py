"""What a training epoch did with its CUDA device: mean utilisation and peak memory.

- **Utilisation** (%) is NVML's (``nvidia-ml-py``, ``import pynvml``): the share of the
  last sample period (1/6 s to 1 s, by product) during which a kernel ran on the device,
  as ``nvidia-smi`` shows it. :class:`UtilizationSampler` reads it every
  ``SAMPLE_INTERVAL_S`` in a background thread, plus once when a window is closed (so an
  epoch shorter than the interval still has one sample); an epoch's value is the mean of
  its window's samples. It is the *device's*: runs sharing a GPU (a fractional
  ``gpus_per_run``) see each other's kernels.
- **Peak memory** (MiB = 2**20 bytes) is this process's: the most PyTorch's caching
  allocator held on the device during the epoch (``torch.cuda.max_memory_reserved``,
  reset at each epoch's start), i.e. what the run took from the device; ``nvidia-smi``
  shows that plus the CUDA context (a few hundred MiB).

The device is the one torch trains on, found in NVML by its UUID (so
``CUDA_VISIBLE_DEVICES``, which Ray sets for each runner, and ``CUDA_DEVICE_ORDER`` map
right). Without CUDA there is no monitor (the epoch's GPU fields stay None); without
NVML (no ``pynvml``, no driver, a MIG slice) utilisation is None and memory is still
recorded. Nothing here ever fails a run: NVML errors turn into missing samples.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

log = logging.getLogger("aelab.gpu")
SAMPLE_INTERVAL_S = 0.5
MIB = 2**20


@dataclass(frozen=True)
class GpuUse:
    """One window's use of the device (None: not measured)."""

    utilization_percent: float | None
    memory_peak_mib: float | None


class UtilizationSampler:
    """Mean NVML utilisation of one device over windows, sampled in a thread.

    ``nvml``: the ``pynvml`` module (a fake in tests); ``uuid``: the device's NVML UUID
    (``GPU-…``). Raises what ``nvmlInit`` or the UUID lookup raises (``pynvml.NVMLError``).
    """

    def __init__(self, nvml: ModuleType | Any, uuid: str, *,
                 interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self._nvml = nvml
        nvml.nvmlInit()
        try:
            self._handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
        except Exception:
            nvml.nvmlShutdown()
            raise
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._sum = 0.0
        self._count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aelab-gpu-sampler",
                                        daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        try:
            value = float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
        except Exception:  # a sample NVML could not give is a missing sample
            return
        with self._lock:
            self._sum += value
            self._count += 1

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def reset(self) -> None:
        """Open a new window (forget the samples so far)."""
        with self._lock:
            self._sum, self._count = 0.0, 0

    def take(self) -> float | None:
        """The mean of this window's samples and one taken now (%, 0–100; None when NVML
        gave none), then a new window."""
        self._sample()
        with self._lock:
            mean = self._sum / self._count if self._count else None
            self._sum, self._count = 0.0, 0
        return mean

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self._interval_s + 1.0)
        try:
            self._nvml.nvmlShutdown()
        except Exception as exc:  # already shut down, driver gone: nothing to release
            log.debug("nvmlShutdown: %s", exc)


class GpuMonitor:
    """Per-window GPU use: :meth:`start` opens a window (an epoch's start), :meth:`take`
    closes it. ``peak_memory_bytes()`` returns the peak since its last call and starts
    the next (torch's ``max_memory_reserved`` then ``reset_peak_memory_stats`` for a real
    device), None when unknown."""

    def __init__(self, utilization: UtilizationSampler | None,
                 peak_memory_bytes: Callable[[], int | None]) -> None:
        self.utilization = utilization
        self._peak = peak_memory_bytes

    def start(self) -> None:
        if self.utilization is not None:
            self.utilization.reset()
        self._peak()

    def take(self) -> GpuUse:
        """The window's mean utilisation (%) and peak memory (MiB), then a new window."""
        util = self.utilization.take() if self.utilization is not None else None
        peak = self._peak()
        return GpuUse(util, peak / MIB if peak is not None else None)

    def close(self) -> None:
        if self.utilization is not None:
            self.utilization.close()


def nvml_uuid(device: torch.device) -> str:
    """The NVML UUID (``GPU-…``) of a CUDA device torch sees."""
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


def _torch_peak(device: torch.device) -> Callable[[], int | None]:
    def peak() -> int | None:
        try:
            value = int(torch.cuda.max_memory_reserved(device))
            torch.cuda.reset_peak_memory_stats(device)
        except Exception as exc:  # never fail a run for a statistic
            log.debug("peak memory of %s: %s", device, exc)
            return None
        return value

    return peak


def monitor_for(device: torch.device, *, nvml: ModuleType | Any | None = None,
                interval_s: float = SAMPLE_INTERVAL_S) -> GpuMonitor | None:
    """A monitor of ``device`` (None unless it is a CUDA device). ``nvml`` defaults to
    ``pynvml``; when it is missing or cannot reach the device, utilisation is not
    measured (said once in the log) and peak memory still is."""
    if device.type != "cuda":
        return None
    sampler = None
    try:
        if nvml is None:
            import pynvml  # nvidia-ml-py, in the train extra

            nvml = pynvml
        sampler = UtilizationSampler(nvml, nvml_uuid(device), interval_s=interval_s)
    except Exception as exc:  # ImportError, NVMLError, an unknown UUID
        log.info("GPU utilisation is not recorded (NVML: %s: %s); peak memory is",
                 type(exc).__name__, str(exc).strip().splitlines()[0][:200] if str(exc)
                 else "")
    return GpuMonitor(sampler, _torch_peak(device))
