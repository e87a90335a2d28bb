"""Each epoch's GPU use (models.gpu): the sampler's arithmetic against a fake NVML module,
the trainer's per-epoch windows, and the null path on a machine without a GPU."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch

from models.gpu import MIB, GpuMonitor, UtilizationSampler, monitor_for
from models.plan import EpochMetrics, format_epoch
from models.training import TrainConfig, train
from tests.utils import wait_for

UUID = "GPU-6a1f0c2e-0000-4000-8000-000000000001"


class FakeNvml:
    """``pynvml`` as far as the sampler uses it. The sampling thread is served ``script``
    (one value per call) and then blocks until :meth:`feed` gives it more, so a test knows
    exactly which samples a window holds; the caller's own sample (``take``) gets ``now``."""

    class NVMLError(Exception):
        pass

    def __init__(self, now: float) -> None:
        self.now = now
        self.script: list[float] = []
        self.served: list[float] = []
        self.waiting = threading.Event()  # the thread has used its script and waits
        self.held = True  # False: the thread is served ``now`` (the test is over)
        self._more = threading.Condition()
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid != UUID:
            raise self.NVMLError(f"NVML_ERROR_NOT_FOUND: {uuid}")
        return "handle-0"

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> SimpleNamespace:
        assert handle == "handle-0"
        if threading.current_thread().name != "aelab-gpu-sampler":
            return SimpleNamespace(gpu=self.now, memory=0)
        with self._more:
            while not self.script and self.held:
                self.waiting.set()
                self._more.wait()
            value = self.script.pop(0) if self.script else self.now
        self.served.append(value)
        return SimpleNamespace(gpu=value, memory=0)

    def feed(self, values: list[float]) -> None:
        with self._more:
            self.waiting.clear()
            self.script.extend(values)
            self._more.notify_all()

    def release(self) -> None:
        with self._more:
            self.held = False
            self._more.notify_all()


def test_a_window_is_the_mean_of_its_samples_and_one_taken_at_its_end() -> None:
    nvml = FakeNvml(now=100.0)
    sampler = UtilizationSampler(nvml, UUID, interval_s=0.01)
    try:
        nvml.feed([10.0, 20.0, 30.0, 60.0])
        wait_for(lambda: nvml.waiting.is_set() and not nvml.script, 5, "the first samples", 0.01)
        assert sampler.take() == (10 + 20 + 30 + 60 + 100) / 5  # 44
        nvml.now = 90.0
        nvml.feed([50.0, 70.0])
        wait_for(lambda: nvml.waiting.is_set() and not nvml.script, 5, "the next samples", 0.01)
        assert sampler.take() == (50 + 70 + 90) / 3  # a new window: the first is forgotten
        nvml.feed([5.0])
        wait_for(lambda: nvml.waiting.is_set() and not nvml.script, 5, "one more sample", 0.01)
        sampler.reset()  # an epoch starts: what came before it is not its own
        nvml.now = 40.0
        assert sampler.take() == 40.0  # shorter than the interval: the end sample alone
    finally:
        nvml.release()
        sampler.close()
    assert nvml.calls == ["init", "shutdown"]
    assert not sampler._thread.is_alive()  # no thread is left behind per run


def test_a_sample_nvml_cannot_give_is_missing_not_zero() -> None:
    nvml = FakeNvml(now=80.0)
    sampler = UtilizationSampler(nvml, UUID, interval_s=3600)
    try:
        assert sampler.take() == 80.0

        def broken(handle: str) -> SimpleNamespace:
            raise nvml.NVMLError("NVML_ERROR_GPU_IS_LOST")

        nvml.nvmlDeviceGetUtilizationRates = broken  # type: ignore[method-assign]
        assert sampler.take() is None
    finally:
        sampler.close()


def test_an_unknown_device_is_refused_and_nvml_released() -> None:
    nvml = FakeNvml(now=0.0)
    with pytest.raises(FakeNvml.NVMLError, match="NOT_FOUND"):
        UtilizationSampler(nvml, "GPU-not-this-one")
    assert nvml.calls == ["init", "shutdown"]


def test_the_monitor_gives_each_window_its_mean_and_its_peak_in_mib() -> None:
    nvml = FakeNvml(now=50.0)
    peaks = iter([7 * MIB, 3 * MIB + MIB // 2, 9 * MIB, 1234 * MIB])
    monitor = GpuMonitor(UtilizationSampler(nvml, UUID, interval_s=3600),
                         lambda: next(peaks))
    monitor.start()  # forgets the peak before the window (7 MiB)
    use = monitor.take()
    assert (use.utilization_percent, use.memory_peak_mib) == (50.0, 3.5)
    monitor.start()  # 9 MiB: between the windows
    nvml.now = 75.0
    use = monitor.take()
    assert (use.utilization_percent, use.memory_peak_mib) == (75.0, 1234.0)
    monitor.close()
    assert nvml.calls == ["init", "shutdown"]
    without_nvml = GpuMonitor(None, lambda: 2 * MIB).take()
    assert (without_nvml.utilization_percent, without_nvml.memory_peak_mib) == (None, 2.0)


def test_no_monitor_without_cuda_and_no_utilisation_without_the_device_in_nvml() -> None:
    assert monitor_for(torch.device("cpu"), nvml=FakeNvml(0.0)) is None
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: its UUID is not the fake's")
    # A CUDA device torch cannot describe (none here): utilisation is not measured, and
    # peak memory is None rather than an error.
    monitor = monitor_for(torch.device("cuda"), nvml=FakeNvml(0.0))
    assert monitor is not None and monitor.utilization is None
    assert monitor.take().utilization_percent is None


def test_the_trainer_opens_one_window_per_epoch(tiny_splits, monkeypatch) -> None:
    """The trainer's wiring, with a monitor whose windows are numbered: epoch k gets
    window k (train and validation), and the monitor is closed at the end. (Without a
    GPU the trainer gets no monitor: tests/service/observe/test_mlflow_mirror.py follows
    such epochs' None from the trainer to the API, the run page and MLflow.)"""
    events: list[str] = []

    class Numbered:
        def __init__(self) -> None:
            self.windows = 0

        def start(self) -> None:
            events.append("start")

        def take(self):
            from models.gpu import GpuUse

            self.windows += 1
            events.append("take")
            return GpuUse(10.0 * self.windows, 100.0 * self.windows)

        def close(self) -> None:
            events.append("close")

    monkeypatch.setattr("models.training.monitor_for", lambda device: Numbered())
    config = TrainConfig("baseline", epochs=2, batch_size=16, phase1_epochs=1,
                         pretrained=False, augment=False, lr=3e-3, seed=0)
    seen: list[tuple[float | None, float | None]] = []
    result = train(config, tiny_splits, on_epoch=lambda m, c: seen.append(
        (m.gpu_utilization_percent, c["history"][-1]["gpu_memory_peak_mib"])))
    assert [(m.gpu_utilization_percent, m.gpu_memory_peak_mib) for m in result.history] == [
        (10.0, 100.0), (20.0, 200.0)]
    assert seen == [(10.0, 100.0), (20.0, 200.0)]  # in the checkpoint's history too
    assert events == ["start", "take", "start", "take", "close"]


def test_an_epochs_line_says_what_is_known_of_its_gpu() -> None:
    base = (3, "train", 32, 1e-3, 0.1, 0.1, 0.1, 0.2, 2.0, 500.0)
    assert format_epoch(EpochMetrics(*base), 5).endswith("500 img/s")  # no GPU: nothing
    assert format_epoch(EpochMetrics(*base, gpu_utilization_percent=87.4,
                                     gpu_memory_peak_mib=1234.4), 5
                        ).endswith("500 img/s  GPU 87% 1234 MiB")
    assert format_epoch(EpochMetrics(*base, gpu_memory_peak_mib=512.0)).endswith(
        "500 img/s  GPU 512 MiB")  # no NVML: memory alone


def test_an_old_checkpoints_history_loads() -> None:
    """Checkpoints written before the GPU fields have none: they load as None."""
    old = {"epoch": 1, "phase": "train", "size": 32, "lr": 1e-3, "train_loss": 0.1,
           "val_loss": 0.1, "val_mse": 0.1, "val_mae": 0.2, "seconds": 1.0,
           "images_per_s": 10.0}
    assert EpochMetrics(**old).gpu_memory_peak_mib is None

