"""Response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from service.states import Status


class _FromRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class RunSummary(_FromRow):
    id: int
    model: str
    dataset: str
    status: Status
    phase: str | None
    epoch: int
    epochs_total: int
    progress: float  # share of training epochs done, 0..1
    lr: float | None
    attempt: int
    error: str | None
    ray_job_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: dict[str, str]


class _ExperimentBase(_FromRow):
    id: int
    name: str
    status: Status
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: dict[str, str]


class ExperimentOut(_ExperimentBase):
    runs: list[RunSummary]


class ExperimentItem(_ExperimentBase):
    """An experiment in a list: its runs as counts (the detail endpoint lists them)."""

    runs: dict[str, int]  # status → count, plus "total"


class ExperimentPage(BaseModel):
    items: list[ExperimentItem]
    next: str | None  # cursor for the next (older) page


class RunItem(RunSummary):
    """A run in a list across experiments: its summary, size and measures."""

    experiment_id: int
    experiment_name: str
    latent_dim: int  # effective: the spec's or the variant's
    measures: dict[str, Any] | None  # the results table's measures, once evaluated


class RunPage(BaseModel):
    items: list[RunItem]
    next: str | None  # cursor for the next page in the same order


class DryRun(BaseModel):
    dry_run: bool = True
    spec: dict[str, Any]
    runs: list[dict[str, str]]
    estimate: dict[str, float | int]
    needs: list[dict[str, Any]]  # files the runs need, as the API host sees them
    missing: list[dict[str, Any]]  # those absent here (workers may still hold them)


class EpochOut(_FromRow):
    epoch: int
    phase: str
    size: int
    lr: float
    train_loss: float
    val_loss: float
    val_mse: float
    val_mae: float
    seconds: float
    images_per_s: float


class LrTrialOut(_FromRow):
    method: str
    lr: float
    loss: float | None
    iterations: int
    stopped_early: bool
    chosen: bool


class ArtifactOut(_FromRow):
    name: str
    kind: str
    content_type: str
    size: int
    checksum: str
    created_at: datetime
    url: str


class AttemptOut(_FromRow):
    attempt: int
    job_id: str
    cluster: str | None  # the Ray session it was submitted to
    status: Status
    error: str | None
    started_at: datetime
    finished_at: datetime | None


class RunDetail(RunSummary):
    experiment_id: int
    spec: dict[str, Any]
    attempts: list[AttemptOut]  # every submission of the run, each with how it ended
    lr_trials: list[LrTrialOut]
    epochs: list[EpochOut]
    measures: dict[str, Any] | None
    artifacts: list[ArtifactOut]


class VariantOut(BaseModel):
    name: str
    title: str
    description: str
    latent_dim: int
    params: int
    needs_pretrained_weights: bool
    pretrained_weights: list[str]  # weights files it loads with pretrained: true
    pretrained_weights_present: bool  # all of them on the API host
    seed_lr: dict[str, float]


class DatasetOut(BaseModel):
    name: str
    title: str
    description: str
    num_classes: int
    train_size: int
    test_size: int
    available: bool  # present and whole on the API host
    status: str  # available, missing or corrupt ("present but corrupt")
    problems: list[str]  # each missing or corrupt file, by path


class WeightsOut(BaseModel):
    name: str
    file: str
    folder: str  # where to place it
    present: bool


class Catalog(BaseModel):
    variants: list[VariantOut]
    datasets: list[DatasetOut]
    weights: list[WeightsOut]
    classifier_pretrained_weights_present: bool  # the reference classifier's (ResNet34)


class LogOut(BaseModel):
    run_id: int
    status: Status
    source: str  # saved (job.log artifact), ray (live from the cluster), none (not started)
    offset: int
    next_offset: int  # pass as ?offset= to read what comes next
    text: str
    complete: bool  # the run ended and this is its saved log: nothing more will come
