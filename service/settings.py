"""Service settings: one pydantic-settings class, read once and injected (never at import).

The settings are the only environment: a run's job gets what it needs from them through
:func:`job_environment` (one function, every field by its own variable name), and the job
driver reads them back with ``Settings()``. Secrets never travel that way: the database
URL reaches drivers through their node's own environment or a file only its owner can read
(:meth:`Settings.database_url_for_jobs`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.context import RunEnv
from workers.logs import LogFormat
from workers.priority import TRAINING_NICENESS

ENV_PREFIX = "AELAB_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    home: Path = Field(default=Path("~/.aelab"), description="state folder: DB, artifacts, data")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AELAB_DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL; default: SQLite file under home. A secret: never put "
        "in a job's environment")
    database_url_file: Path | None = Field(
        default=None, description="a file holding the database URL (used when database_url "
        "is unset; how job drivers get it)")
    api_token: SecretStr | None = Field(default=None, description="Bearer token for writes")
    protect_reads: bool = Field(default=False, description="require the token for reads too")
    ray_address: str | None = Field(
        default=None, validation_alias=AliasChoices("AELAB_RAY_ADDRESS", "RAY_ADDRESS"),
        description="join this Ray cluster; default: start a local head",
    )
    artifact_url: str | None = Field(default=None, description="fsspec URL for artifacts; "
                                     "default: home/artifacts")
    artifact_min_free_mb: float = Field(
        default=100.0, ge=0, description="the artifact store (a local folder) counts as "
        "full below this much free space (MB): no run starts, /readyz says why")
    data_root: str | None = Field(default=None, description="dataset cache on every node; "
                                  "default: home/data")
    datasets_root: str | None = Field(
        default=None, description="folder datasets: each folder <name>/ with train/ and test/ "
        "under it is a dataset named <name>; on a cluster, a path every node sees the same "
        "(a shared mount); default: home/datasets")
    dataset_urls: dict[str, str] = Field(
        default_factory=dict, description="datasets read from an fsspec URL, by name (JSON: "
        '{"shapes": "s3://lab-data/shapes"}): each URL a folder with train/ and test/ as '
        "under datasets_root; it reaches every run's job, so on a cluster no node needs a "
        "shared mount (the filesystem's package, e.g. s3fs, installed where runs train)")
    weights_dir: str | None = Field(default=None, description="pretrained weights folder; "
                                    "default: home/weights")
    allow_download: bool = Field(default=True, description="download missing datasets and "
                                 "weights (off: fail naming the files to place)")
    tune_storage_url: str | None = Field(default=None, description="Ray Tune storage for "
                                         "trial checkpoints; shared on multi-node clusters; "
                                         "default: home/ray_results")
    max_trial_failures: int = Field(default=3, ge=0, description="how often a run's step "
                                    "may lose its runner (its node) and resume elsewhere")
    runner_idle_s: float = Field(default=600.0, gt=0, description="a warm runner idle this "
                                 "long is stopped, giving its GPU back")
    training_niceness: int = Field(
        default=TRAINING_NICENESS, ge=0, le=19, description="nice level of training "
        "processes, and of the sessions of the embedded Ray head and of each job driver (the "
        "API keeps the CPU it needs)")
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, description="largest request "
                                "body accepted (413 beyond; checked before it is read)")
    max_runs_per_experiment: int = Field(default=48, ge=1)
    max_epochs: int = Field(default=200, ge=1)
    max_in_flight: int = Field(default=4, ge=1, description="runs on Ray at once")
    max_starting: int = Field(default=4, ge=1, description="runs whose jobs are starting at "
                              "once (submitted, driver not yet running); the next wait "
                              "in the queue")
    dispatch_interval_s: float = Field(default=2.0, gt=0)
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    migrate_on_start: bool = True
    start_dispatcher: bool = True
    dashboard_port: int = Field(default=8265, description="local head's dashboard (0: free)")
    ray_head_dead_after_s: float = Field(default=30.0, gt=0, description="an embedded head "
                                         "silent this long, with its GCS port closed, is "
                                         "dead: cleaned up and replaced")
    max_run_attempts: int = Field(default=3, ge=1, description="attempts a run may lose "
                                  "itself (its driver died): it fails when this many were")
    max_cluster_retries: int = Field(default=10, ge=0, description="re-queues of a run "
                                     "whose Ray cluster was lost (its head gone), counted "
                                     "apart from max_run_attempts: it fails at one more")
    gpu_cluster: bool | None = Field(default=None, description="whether this deployment's "
                                     "Ray cluster has GPU machines: true, a run asking for "
                                     "a GPU waits for one (however many GPU nodes are "
                                     "joined at that moment); false, it trains on CPUs; "
                                     "unset, true when any node of the cluster's session "
                                     "(alive or since lost) declared GPUs")
    classifier_heartbeat_s: float = Field(default=20.0, gt=0, description="how often a "
                                          "reference-classifier trainer says it is alive")
    classifier_claim_expiry_s: float = Field(default=120.0, gt=0, description="a trainer "
                                             "silent this long has its claim taken over")
    db_retry_s: float = Field(default=600.0, ge=0, description="how long a job driver "
                              "retries a write while the database is unreachable")
    log_format: LogFormat = Field(
        default="text", description="log lines of the API, the dispatcher, job drivers and "
        "runners: text, or json (one object a line: time, level, logger, message, "
        "request_id, experiment_id, run_id where known)")
    webhook_urls: str | None = Field(
        default=None, description="comma-separated http(s) URLs that receive run and "
        "experiment events (service.webhooks); a secret where the URL holds a token")
    webhook_secret: SecretStr | None = Field(
        default=None, description="key of the events' X-Aelab-Signature (HMAC-SHA256); "
        "required with webhook_urls")
    webhook_retry_s: float = Field(default=3600.0, gt=0, description="how long an event "
                                   "is retried (exponential backoff) before it is given up")
    webhook_events: bool | None = Field(
        default=None, description="record run and experiment events for the webhooks "
        "(service.webhooks); default: whether webhook_urls is set. The API passes it to its "
        "job drivers, which record runs' ends but never get the URLs")
    mlflow_tracking_uri: str | None = Field(
        default=None, description="mirror every run to this MLflow tracking server "
        "(http(s)://…, file:…, databricks…; extra aelab[mlflow]); a tracker that is "
        "away never fails or delays a run")
    public_url: str | None = Field(
        default=None, description="the service's address as users reach it "
        "(https://aelab.example): makes the page links of webhook events and MLflow tags "
        "absolute")
    public_dashboard_url: str | None = Field(default=None, description="dashboard link shown "
                                             "to users, when it differs from the Ray address")

    @field_validator("webhook_urls")
    @classmethod
    def _webhook_urls(cls, value: str | None) -> str | None:
        for url in (u.strip() for u in (value or "").split(",") if u.strip()):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhook_urls: {url!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _webhook_secret(self) -> Settings:
        if self.webhook_url_list and self.webhook_secret is None:
            raise ValueError("webhook_urls needs webhook_secret (AELAB_WEBHOOK_SECRET): "
                             "receivers check each event's signature with it")
        if self.webhook_events is None:
            self.webhook_events = bool(self.webhook_url_list)
        elif not self.webhook_events and self.webhook_url_list:
            raise ValueError("webhook_events is false while webhook_urls is set: no event "
                             "would ever be sent to them; unset AELAB_WEBHOOK_EVENTS")
        return self

    @property
    def webhook_url_list(self) -> list[str]:
        return [u.strip() for u in (self.webhook_urls or "").split(",") if u.strip()]

    @field_validator("dataset_urls")
    @classmethod
    def _dataset_urls(cls, value: dict[str, str]) -> dict[str, str]:
        import fsspec

        from models.datasets import BUILT_IN
        from models.registry import NAME

        for name, url in value.items():
            if not NAME.match(name) or name in BUILT_IN:
                raise ValueError(f"{name!r} cannot name a dataset: lowercase letters, "
                                 f"digits and _, not a built-in's ({', '.join(BUILT_IN)})")
            protocol = fsspec.core.split_protocol(url)[0] if url else "?"
            if protocol is not None and protocol not in fsspec.available_protocols():
                raise ValueError(f"the URL of {name!r} is no fsspec URL (protocols: "
                                 f"{', '.join(sorted(fsspec.available_protocols()))})")
        return value

    @cached_property
    def home_path(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        if self.database_url_file is not None:
            return self.database_url_file.expanduser().read_text().strip()
        return f"sqlite:///{self.home_path / 'aelab.db'}"

    @property
    def artifact_root(self) -> str:
        return self.artifact_url or str(self.home_path / "artifacts")

    @property
    def artifact_min_free_bytes(self) -> int:
        return int(self.artifact_min_free_mb * 1_000_000)

    @property
    def tune_storage(self) -> str:
        return self.tune_storage_url or str(self.home_path / "ray_results")

    @property
    def data_path(self) -> str:
        return self.data_root or str(self.home_path / "data")

    @property
    def datasets_path(self) -> str:
        return self.datasets_root or str(self.home_path / "datasets")

    @property
    def weights_path(self) -> str:
        return self.weights_dir or str(self.home_path / "weights")

    def run_env(self, storage_key: str = "run", device: str | None = None,
                run_id: int | None = None) -> RunEnv:
        """What a run needs from these settings (paths, downloads, trial storage)."""
        return RunEnv(data_root=self.data_path, weights_dir=self.weights_path,
                      run_id=run_id, log_format=self.log_format, datasets_dir=self.datasets_path,
                      dataset_urls=tuple(sorted(self.dataset_urls.items())),
                      allow_download=self.allow_download, tune_storage=self.tune_storage,
                      storage_key=storage_key, max_trial_failures=self.max_trial_failures,
                      device=device, niceness=self.training_niceness)

    def database_url_for_jobs(self) -> Path | None:
        """A file holding the database URL for job drivers (mode 0600, under home), or
        None when drivers derive it themselves (the default SQLite file under home)."""
        if self.database_url_file is not None:
            return self.database_url_file
        if not self.database_url:
            return None
        folder = self.home_path / "secrets"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / "database_url"
        tmp = path.with_name(".database_url.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.database_url)
        os.replace(tmp, path)
        return path


def run_storage_key(run_id: int, uid: str) -> str:
    """The folder of a run's Tune trials under the Tune storage."""
    return f"run-{run_id}-{uid}"


# Settings a job's environment never carries, and why.
NOT_FOR_JOBS = {
    "database_url": "a secret: drivers read database_url_file or their node's environment",
    "api_token": "a secret the drivers do not need",
    "ray_address": "a job runs inside its cluster, and Ray gives its driver the address",
    "webhook_urls": "may hold a receiver's token; only the API delivers events",
    "webhook_secret": "a secret: only the API signs events",
}
# The secrets among them: the API's alone, in no process of the Ray cluster it starts.
SECRETS = ("database_url", "api_token", "webhook_urls", "webhook_secret")
# libpq reads a database password from the environment too.
DATABASE_PASSWORD_VARIABLES = ("PGPASSWORD",)


def env_names(field: str) -> tuple[str, ...]:
    """Every environment variable a setting is read from (its aliases, or the prefix)."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    return (f"{ENV_PREFIX}{field.upper()}",)


def env_name(field: str) -> str:
    """The environment variable a setting is read from (its first alias, or the prefix)."""
    return env_names(field)[0]


def without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` less the secrets: every variable a setting of :data:`SECRETS` is read
    from, in any case (pydantic-settings matches names case-insensitively), and libpq's
    :data:`DATABASE_PASSWORD_VARIABLES`. The environment of the embedded Ray head, whose
    processes (raylet, GCS, dashboard, workers, job drivers) inherit it: drivers get what
    they need from :func:`job_environment` (the database URL as a file's path)."""
    secret = {name.upper() for field in SECRETS for name in env_names(field)}
    secret.update(DATABASE_PASSWORD_VARIABLES)
    return {name: value for name, value in environ.items() if name.upper() not in secret}


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value)  # as pydantic-settings reads a mapping back
    return str(value)


def job_environment(settings: Settings, *, database_url_file: Path | None = None
                    ) -> dict[str, str]:
    """The environment variables a run's job needs to rebuild these settings: every set
    setting but those in :data:`NOT_FOR_JOBS`, plus ``database_url_file`` (a path, not
    the secret: see :meth:`Settings.database_url_for_jobs`) and ``TORCH_HOME`` when set."""
    env: dict[str, str] = {}
    for field in Settings.model_fields:
        if field in NOT_FOR_JOBS:
            continue
        value = settings.home_path if field == "home" else getattr(settings, field)
        if value is not None:
            env[env_name(field)] = _env_value(value)
    if database_url_file is not None:
        env[env_name("database_url_file")] = str(database_url_file)
    if "TORCH_HOME" in os.environ:
        env["TORCH_HOME"] = os.environ["TORCH_HOME"]
    return env
