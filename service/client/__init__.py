"""The Python client of the aelab REST API (httpx), for notebooks, scripts and the CLI.

What ``pip install aelab`` (the base install: httpx, pydantic, pydantic-settings, PyYAML)
ships: this package imports only those and itself, never torch, Ray, SQLAlchemy or FastAPI,
nor any other part of aelab (a test reads every import here). It holds the API's wire
contract too (:mod:`.schemas`, :mod:`.states`), which the server imports from here::

    from service.client import Client

    with Client("http://127.0.0.1:8000") as aelab:
        experiment = aelab.submit("spec.yaml")
        done = aelab.wait(experiment.id, on_change=lambda e: print(e.status))
        frame = aelab.results_frame(done.id)

- :mod:`.client`: :class:`Client`, one method per API call, retries, checked downloads;
- :mod:`.errors`: what it raises, one class per way a call fails;
- :mod:`.specs`: specs from models, mappings or JSON/YAML files;
- :mod:`.schemas`: the API's path prefix, its results formats and every answer's model;
- :mod:`.states`: the lifecycle states of experiments and runs.
"""

from service.client.client import DEFAULT_URL, Client, ClientSettings
from service.client.errors import (
    AelabError,
    ApiError,
    AuthError,
    ChecksumMismatch,
    ConflictError,
    InvalidRequest,
    NotFoundError,
    ServiceUnavailable,
    SpecError,
    Unreachable,
    UnsafeArtifactName,
    WaitTimeout,
    field_path,
)
from service.client.schemas import API_PREFIX, ResultFormat
from service.client.specs import load_spec
from service.client.states import Status

__all__ = [
    "API_PREFIX",
    "DEFAULT_URL",
    "AelabError",
    "ApiError",
    "AuthError",
    "ChecksumMismatch",
    "Client",
    "ClientSettings",
    "ConflictError",
    "InvalidRequest",
    "NotFoundError",
    "ResultFormat",
    "ServiceUnavailable",
    "SpecError",
    "Status",
    "Unreachable",
    "UnsafeArtifactName",
    "WaitTimeout",
    "field_path",
    "load_spec",
]
