"""SQLAlchemy 2.0 typed ORM. Alembic (migrations/) is the only way this schema changes."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from service.client.states import FINISHED, Status  # noqa: F401  (re-exported)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


_status = Enum(Status, name="status", native_enum=False, length=16,
               values_callable=lambda e: [m.value for m in e])
class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is UTC with an offset on the way in and out: SQLite keeps no time
    zone and would hand back naive datetimes (PostgreSQL's timestamptz keeps it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: aelab stores UTC times with their offset")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Timestamp = UTCDateTime()


class Measured(TypeDecorator[float]):
    """A float measure that keeps NaN: SQLite would store NaN as NULL ("not measured"), so
    there it is stored as the text 'NaN' (a REAL column keeps text it cannot convert)."""

    impl = Float
    cache_ok = True

    def bind_processor(self, dialect: Any) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        # Bypasses the SQLite dialect's own float coercion, which would turn 'NaN' back.
        return lambda v: "NaN" if isinstance(v, float) and math.isnan(v) else v

    def process_result_value(self, value: Any, dialect: Any) -> float | None:
        return float(value) if isinstance(value, str) else value


# Ids are never reused: SQLite would hand a deleted row's id to the next one without
# AUTOINCREMENT (PostgreSQL's sequences never do).
NEVER_REUSE = {"sqlite_autoincrement": True}


class Experiment(Base):
    __tablename__ = "experiments"
    __table_args__ = NEVER_REUSE

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[Status] = mapped_column(_status, default=Status.queued, index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)

    runs: Mapped[list[Run]] = relationship(back_populates="experiment", order_by="Run.id",
                                           cascade="all, delete-orphan", passive_deletes=True)


class Run(Base):
    __tablename__ = "runs"
    # A search's sample is made once: one row per (experiment, model, dataset, index).
    __table_args__ = (Index("ix_runs_search_sample", "experiment_id", "model", "dataset",
                            "sample", unique=True), NEVER_REUSE)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    # Random per run: Ray job ids stay unique across databases sharing one Ray cluster.
    uid: Mapped[str] = mapped_column(String(32), default=lambda: uuid.uuid4().hex[:12])
    model: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(String(64))
    status: Mapped[Status] = mapped_column(_status, default=Status.queued, index=True)
    phase: Mapped[str | None] = mapped_column(String(32))  # data, lr_search, train, evaluate
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epochs_total: Mapped[int] = mapped_column(Integer)
    latent_dim: Mapped[int] = mapped_column(Integer)  # effective: the spec's or the variant's
    seed: Mapped[int] = mapped_column(BigInteger)  # its run spec's: 0..2**32-1
    rd_lambda: Mapped[float | None] = mapped_column(Float)  # factorized_prior's effective λ
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the run contract (workers.spec)
    lr: Mapped[float | None] = mapped_column(Float)
    # Its index among its (model, dataset)'s samples of the experiment's search (None:
    # a grid run); its sampled values are in its spec (service.search).
    sample: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    ray_job_id: Mapped[str | None] = mapped_column(String(128))
    # The Ray session (one start of a head) its current job was submitted to.
    cluster: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    experiment: Mapped[Experiment] = relationship(back_populates="runs")
    epochs: Mapped[list[EpochMetric]] = relationship(
        order_by="EpochMetric.epoch", cascade="all, delete-orphan", passive_deletes=True)
    lr_trials: Mapped[list[LrTrial]] = relationship(
        order_by="LrTrial.id", cascade="all, delete-orphan", passive_deletes=True)
    measures: Mapped[Measure | None] = relationship(
        cascade="all, delete-orphan", passive_deletes=True)
    artifacts: Mapped[list[Artifact]] = relationship(
        order_by="Artifact.id", cascade="all, delete-orphan", passive_deletes=True)
    attempts: Mapped[list[RunAttempt]] = relationship(
        order_by="RunAttempt.attempt", cascade="all, delete-orphan", passive_deletes=True)
    codec_results: Mapped[list[CodecResult]] = relationship(
        order_by="CodecResult.id", cascade="all, delete-orphan", passive_deletes=True)
    size_measures: Mapped[list[SizeMeasure]] = relationship(
        order_by="SizeMeasure.size", cascade="all, delete-orphan", passive_deletes=True)


class RunAttempt(Base):
    """One submission of a run: its job, the cluster it went to, and how it ended."""

    __tablename__ = "run_attempts"
    __table_args__ = (UniqueConstraint("run_id", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(String(128))
    cluster: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[Status] = mapped_column(_status, default=Status.running)
    error: Mapped[str | None] = mapped_column(Text)
    # What a lost attempt was lost to: "cluster" (its Ray cluster gone) or "run" (its
    # driver died); each has its own budget of re-queues. NULL: not lost.
    lost_to: Mapped[str | None] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)


class EpochMetric(Base):
    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("run_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    lr: Mapped[float] = mapped_column(Float)
    train_loss: Mapped[float] = mapped_column(Float)
    val_loss: Mapped[float] = mapped_column(Float)
    val_mse: Mapped[float] = mapped_column(Float)
    val_mae: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    images_per_s: Mapped[float] = mapped_column(Float)
    # The epoch's use of its GPU (models.gpu); NULL without one.
    gpu_utilization_percent: Mapped[float | None] = mapped_column(Float)
    gpu_memory_peak_mib: Mapped[float | None] = mapped_column(Float)


class LrTrial(Base):
    __tablename__ = "lr_trials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    method: Mapped[str] = mapped_column(String(16))
    lr: Mapped[float] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    iterations: Mapped[int] = mapped_column(Integer, default=0)
    stopped_early: Mapped[bool] = mapped_column(default=False)
    chosen: Mapped[bool] = mapped_column(default=False)


class Measure(Base):
    """One column per measure of the measures contract (``workers.measures.RunMeasures``,
    where each is described); a test keeps the two equal."""

    __tablename__ = "measures"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"),
                                        primary_key=True)
    mse: Mapped[float] = mapped_column(Measured)
    mae: Mapped[float] = mapped_column(Measured)
    psnr: Mapped[float] = mapped_column(Measured)
    ssim: Mapped[float] = mapped_column(Measured)
    n_images: Mapped[int] = mapped_column(Integer)
    classifier_accuracy: Mapped[float | None] = mapped_column(Measured)
    psnr_per_image: Mapped[float | None] = mapped_column(Measured)  # CompressAI's convention
    ms_ssim: Mapped[float | None] = mapped_column(Measured)  # None under 176 px a side
    original_accuracy: Mapped[float | None] = mapped_column(Measured)
    training_time_s: Mapped[float] = mapped_column(Measured)  # every epoch of the final model
    search_time_s: Mapped[float | None] = mapped_column(Measured)  # the LR search alone
    wall_time_s: Mapped[float | None] = mapped_column(Measured)  # preflight → evaluated
    params: Mapped[int] = mapped_column(BigInteger)
    latent_dim: Mapped[int] = mapped_column(Integer)
    # Nominal, not measured: model-space values / bytes per latent value (catalog).
    compression_ratio: Mapped[float] = mapped_column(Measured)
    compression_ratio_bytes: Mapped[float] = mapped_column(Measured)
    # Measured (models.compression): the test set's latents quantised to quant_bits (None:
    # the factorized prior's own integer symbols), coded into stream_bytes; decoded from
    # that stream, the q_* measures. bpp over the native H×W; raw = native uint8 bytes.
    quant_bits: Mapped[int | None] = mapped_column(Integer)
    q_mse: Mapped[float | None] = mapped_column(Measured)
    q_mae: Mapped[float | None] = mapped_column(Measured)
    q_psnr: Mapped[float | None] = mapped_column(Measured)
    q_ssim: Mapped[float | None] = mapped_column(Measured)
    q_accuracy: Mapped[float | None] = mapped_column(Measured)
    q_psnr_per_image: Mapped[float | None] = mapped_column(Measured)
    q_ms_ssim: Mapped[float | None] = mapped_column(Measured)
    # What the code knows (models.probes): probes and clusters of the test codes.
    probe_knn_accuracy: Mapped[float | None] = mapped_column(Measured)
    probe_linear_accuracy: Mapped[float | None] = mapped_column(Measured)
    cluster_nmi: Mapped[float | None] = mapped_column(Measured)
    q_probe_knn_accuracy: Mapped[float | None] = mapped_column(Measured)
    q_probe_linear_accuracy: Mapped[float | None] = mapped_column(Measured)
    q_cluster_nmi: Mapped[float | None] = mapped_column(Measured)
    stream_bytes: Mapped[int | None] = mapped_column(BigInteger)
    bytes_per_image: Mapped[float | None] = mapped_column(Measured)
    bpp: Mapped[float | None] = mapped_column(Measured)
    raw_bytes_per_image: Mapped[int | None] = mapped_column(Integer)
    side_info_bytes: Mapped[int | None] = mapped_column(BigInteger)  # per run, not per image
    native_pixels: Mapped[int | None] = mapped_column(Integer)  # H×W that bpp is counted over
    rd_lambda: Mapped[float | None] = mapped_column(Measured)  # the λ it was trained with


class CodecResult(Base):
    """A standard codec on a run's test images (models.compression.codec_rows): matched
    to the run's bytes per image (``kind`` matched, with its ``status``) or at one quality
    of a curve (``kind`` curve). Sizes are whole files; distortion in model space."""

    __tablename__ = "codec_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    codec: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))  # matched | curve
    status: Mapped[str | None] = mapped_column(String(16))  # matched | below_range | above_…
    quality: Mapped[float | None] = mapped_column(Float)  # mean over images when matched
    target_bytes: Mapped[float | None] = mapped_column(Measured)
    min_bytes_per_image: Mapped[float | None] = mapped_column(Measured)
    max_bytes_per_image: Mapped[float | None] = mapped_column(Measured)
    bytes_per_image: Mapped[float] = mapped_column(Measured)
    bpp: Mapped[float] = mapped_column(Measured)
    mse: Mapped[float] = mapped_column(Measured)
    mae: Mapped[float] = mapped_column(Measured)
    psnr: Mapped[float] = mapped_column(Measured)
    ssim: Mapped[float] = mapped_column(Measured)
    classifier_accuracy: Mapped[float | None] = mapped_column(Measured)
    n_images: Mapped[int] = mapped_column(Integer)
    psnr_per_image: Mapped[float | None] = mapped_column(Measured)
    ms_ssim: Mapped[float | None] = mapped_column(Measured)


class SizeMeasure(Base):
    """A run's trained model evaluated at another input side (``evaluation.sizes``): one
    column per field of ``workers.measures.SizeMeasures``; a test keeps the two equal.
    Only sizes it was measured at: which it cannot take follows from its spec."""

    __tablename__ = "run_size_measures"
    __table_args__ = (UniqueConstraint("run_id", "size"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    size: Mapped[int] = mapped_column(Integer)  # the model's input and output side, px
    mse: Mapped[float] = mapped_column(Measured)
    mae: Mapped[float] = mapped_column(Measured)
    psnr: Mapped[float] = mapped_column(Measured)
    ssim: Mapped[float] = mapped_column(Measured)
    n_images: Mapped[int] = mapped_column(Integer)
    classifier_accuracy: Mapped[float | None] = mapped_column(Measured)
    psnr_per_image: Mapped[float | None] = mapped_column(Measured)
    ms_ssim: Mapped[float | None] = mapped_column(Measured)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("run_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))  # samples, checkpoint, …
    uri: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str] = mapped_column(String(64))  # sha256 hex
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class ReferenceClassifier(Base):
    """One trained classifier per (dataset, budget): shared by every run that needs it."""

    __tablename__ = "reference_classifiers"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(64))
    status: Mapped[Status] = mapped_column(_status, default=Status.running)
    uri: Mapped[str | None] = mapped_column(Text)
    accuracy: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    owner: Mapped[str | None] = mapped_column(String(64))  # run-<id>-a<attempt> training it
    heartbeat_at: Mapped[datetime | None] = mapped_column(Timestamp)  # the trainer is alive


class WebhookEvent(Base):
    """The webhook outbox (``service.webhooks``): one row per event, written in the same
    transaction as the status change it reports, delivered by the API's background loop
    to every ``AELAB_WEBHOOK_URLS`` receiver, and marked delivered once each answered 2xx
    (so an API restarted in between delivers it then, and never again after)."""

    __tablename__ = "webhook_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        String(36), unique=True, default=lambda: str(uuid.uuid4()))  # X-Aelab-Delivery
    event: Mapped[str] = mapped_column(String(32))  # run.failed, experiment.finished, …
    experiment_id: Mapped[int | None] = mapped_column(Integer)  # no FK: outlives a delete
    run_id: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)  # the exact JSON sent (and signed)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivered_to: Mapped[list[str]] = mapped_column(JSON, default=list)  # receivers done
    next_attempt_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_error: Mapped[str | None] = mapped_column(Text)
