"""What the client raises: one class per way a call can fail, each carrying what the API
said (its status, message, field errors and request id)."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from service.client.schemas import ErrorOut, ExperimentOut, FieldError


class AelabError(Exception):
    """Anything the client could not do."""


class Unreachable(AelabError):
    """The server could not be reached (after the retries a request allows)."""


class SpecError(AelabError, ValueError):
    """A spec file that cannot be read or parsed (nothing was sent)."""


class ChecksumMismatch(AelabError):
    """A downloaded artifact's sha256 differs from the checksum the API lists for it."""


class UnsafeArtifactName(AelabError):
    """The server listed an artifact whose name is not a plain file name."""


class WaitTimeout(AelabError, TimeoutError):
    """:meth:`Client.wait` ran out of time; ``experiment`` is how it was last seen."""

    def __init__(self, experiment: ExperimentOut, timeout_s: float) -> None:
        super().__init__(f"experiment {experiment.id} still {experiment.status.value} after "
                         f"{timeout_s:g} s")
        self.experiment = experiment


class ApiError(AelabError):
    """The API answered with an error status. ``detail`` is its message; ``errors`` its
    field errors (a 422); ``request_id`` the id of a 500 in the server's log."""

    def __init__(self, status_code: int, detail: str, errors: list[FieldError],
                 request_id: str | None = None) -> None:
        self.status_code = status_code
        self.detail = detail
        self.errors = errors
        self.request_id = request_id
        text = detail if not errors else "; ".join(
            f"{field_path(e)}: {e.msg}" for e in errors)
        suffix = f" (request id {request_id})" if request_id else ""
        super().__init__(f"HTTP {status_code}: {text}{suffix}")


class InvalidRequest(ApiError):
    """422: the request (a spec) was refused; ``errors`` names every field."""


class AuthError(ApiError):
    """401/403: a token is missing or wrong (``AELAB_API_TOKEN``)."""


class NotFoundError(ApiError):
    """404: no such experiment, run or artifact."""


class ConflictError(ApiError):
    """409: valid, but not in the resource's current state (cancel a finished one)."""


class ServiceUnavailable(ApiError):
    """503: the server answers but its database or cluster does not (after retries)."""


_ERRORS: dict[int, type[ApiError]] = {401: AuthError, 403: AuthError, 404: NotFoundError,
                                      409: ConflictError, 422: InvalidRequest,
                                      503: ServiceUnavailable}


def field_path(error: FieldError) -> str:
    """A field error's location as the API named it, dotted: ``body.lr_search.method``."""
    return ".".join(str(part) for part in error.loc)


def api_error(response: httpx.Response) -> ApiError:
    """The :class:`ApiError` subclass for an error answer, with what its body says."""
    try:
        body = ErrorOut.model_validate_json(response.read())
        errors = body.detail if isinstance(body.detail, list) else []
        detail = body.detail if isinstance(body.detail, str) else "invalid request"
        request_id = body.request_id
    except (ValidationError, ValueError):
        detail = response.text.strip()[:500] or response.reason_phrase
        errors, request_id = [], None
    cls = _ERRORS.get(response.status_code, ApiError)
    return cls(response.status_code, detail, errors, request_id)
