"""Service settings: one pydantic-settings class, read once and injected (never at import)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AELAB_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path("~/.aelab"), description="state folder: DB, artifacts, data")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AELAB_DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL; default: SQLite file under home",
    )
    api_token: SecretStr | None = Field(default=None, description="Bearer token for writes")
    protect_reads: bool = Field(default=False, description="require the token for reads too")
    ray_address: str | None = Field(
        default=None, validation_alias=AliasChoices("AELAB_RAY_ADDRESS", "RAY_ADDRESS"),
        description="join this Ray cluster; default: start a local head",
    )
    artifact_url: str | None = Field(default=None, description="fsspec URL for artifacts; "
                                     "default: home/artifacts")
    data_root: str | None = Field(default=None, description="dataset cache on every node; "
                                  "default: home/data")
    weights_dir: str | None = Field(default=None, description="pretrained weights folder; "
                                    "default: home/weights")
    tune_storage_url: str | None = Field(default=None, description="Ray Tune storage for "
                                         "trial checkpoints; shared on multi-node clusters; "
                                         "default: home/ray_results")
    max_runs_per_experiment: int = Field(default=48, ge=1)
    max_epochs: int = Field(default=200, ge=1)
    max_in_flight: int = Field(default=4, ge=1, description="runs on Ray at once")
    dispatch_interval_s: float = Field(default=2.0, gt=0)
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    migrate_on_start: bool = True
    start_dispatcher: bool = True
    dashboard_port: int = Field(default=8265, description="local head's dashboard (0: free)")
    public_dashboard_url: str | None = Field(default=None, description="dashboard link shown "
                                             "to users, when it differs from the Ray address")

    @cached_property
    def home_path(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_path / 'aelab.db'}"

    @property
    def artifact_root(self) -> str:
        return self.artifact_url or str(self.home_path / "artifacts")

    @property
    def tune_storage(self) -> str:
        return self.tune_storage_url or str(self.home_path / "ray_results")

    @property
    def data_path(self) -> str:
        return self.data_root or str(self.home_path / "data")

    @property
    def weights_path(self) -> str:
        return self.weights_dir or str(self.home_path / "weights")
