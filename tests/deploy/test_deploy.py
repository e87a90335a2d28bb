"""The compose file and Kubernetes manifests, checked without a Docker engine or cluster."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from service.settings import Settings
from tests.utils import REPO

ROOT = REPO
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
# Variables read by software other than aelab's settings: Ray, torch, PostgreSQL.
THIRD_PARTY_ENV = {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "TORCH_HOME", "POSTGRES_USER",
                   "POSTGRES_DB", "POSTGRES_PASSWORD"}


def example_env() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def resolved_compose() -> dict:
    """The compose file as `docker compose` sees it with .env.example: YAML merge keys
    resolved, ${VAR…} interpolated, x- fragments dropped."""
    env = example_env()

    def interpolate(match: re.Match) -> str:
        name = match.group(1)
        if name not in env and match.group(2) != "-":
            raise AssertionError(f"${{{name}}} has no value in .env.example")
        return env.get(name, match.group(3) or "")

    text = re.sub(r"\$\{(\w+)(?::?([-?])([^}]*))?\}", interpolate, COMPOSE.read_text())
    data = yaml.safe_load(text.replace("$$", "$"))
    return {k: v for k, v in data.items() if not k.startswith("x-")}


def settings_env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if alias is not None:
            names |= {c for c in getattr(alias, "choices", [alias]) if isinstance(c, str)}
        names.add(f"AELAB_{name.upper()}")
    return names


def test_compose_file_validates_against_the_compose_specification() -> None:
    compose_spec = pytest.importorskip("compose_spec")
    data = resolved_compose()
    compose = compose_spec.PyCompose.from_json(json.dumps(data))
    assert compose.validate() is None
    assert set(compose.service_names()) == {"postgres", "ray-head", "ray-worker", "api"}
    with pytest.raises(ValueError, match="bogus"):
        compose_spec.PyCompose.from_json(json.dumps({**data, "bogus": {}}))


def test_services_gpu_reservation_healthchecks_and_wiring() -> None:
    services = resolved_compose()["services"]
    worker = services["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "1", "capabilities": ["gpu"]}] or \
        devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "--address=ray-head:6379" in worker["command"]
    assert "ports" not in worker  # scalable with --scale ray-worker=N
    head = services["ray-head"]
    assert "8265:8265" in head["ports"] and "--head" in head["command"]
    assert "deploy" not in head  # no GPU needed on the head
    for name in ("postgres", "ray-head", "api"):
        assert services[name]["healthcheck"]["test"], name
    api = services["api"]
    assert "aelab db upgrade" in api["command"] and "aelab serve" in api["command"]
    assert api["environment"]["RAY_ADDRESS"] == "http://ray-head:8265"
    assert api["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in api["environment"]["DATABASE_URL"]
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("ray-head", "ray-worker", "api"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"]
        assert "aelab-data:/var/lib/aelab" in services[name]["volumes"]
    assert set(resolved_compose()["volumes"]) == {"postgres-data", "aelab-data"}


def test_every_aelab_variable_the_compose_file_sets_is_read_by_the_settings() -> None:
    known = settings_env_names()
    for name, service in resolved_compose()["services"].items():
        for var in service.get("environment", {}):
            if var in THIRD_PARTY_ENV or var == "RAY_ADDRESS":
                continue
            assert var in known, f"{name} sets {var}, which no setting reads"


def test_env_example_holds_every_secret_the_compose_file_needs() -> None:
    needed = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    assert needed <= set(example_env())


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose 1.29 (Debian) is not installed")
def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(ENV_EXAMPLE.read_text())
    result = subprocess.run(["docker-compose", "--project-directory", str(tmp_path), "-f",
                             str(COMPOSE), "config", "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_kuberay_manifests_parse_with_a_gpu_worker_group() -> None:
    docs = []
    for path in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert {"RayCluster", "Deployment", "Service", "PersistentVolumeClaim"} <= set(kinds)
    cluster = kinds["RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    group = cluster["spec"]["workerGroupSpecs"][0]
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in container["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token" and "RAY_AUTH_TOKEN" in env
    api = kinds["Deployment"]["spec"]["template"]["spec"]
    api_env = {e["name"]: e for e in api["containers"][0]["env"]}
    assert api_env["RAY_ADDRESS"]["value"] == "http://aelab-head-svc:8265"
    known = settings_env_names()
    for name in api_env:
        assert name in known or name in THIRD_PARTY_ENV or name == "RAY_ADDRESS", name
    assert api["initContainers"][0]["command"] == ["aelab", "db", "upgrade"]
