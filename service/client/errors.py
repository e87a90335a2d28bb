"""What the client raises: one class per way a call can fail, each carrying what the API
said (its status, message, error code, field errors and request id)."""

from __future__ import annotations

import httpx
from pydantic import TypeAdapter, ValidationError

from service.client.schemas import ErrorOut, ExperimentOut, FieldError, ValidationErrorOut


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
    field errors (a 422); ``code`` the error's kind (``schemas.ERROR_CODES``; None for a
    422 or an answer that is not the API's); ``request_id`` the id of a 500 in the
    server's log."""

    def __init__(self, status_code: int, detail: str, errors: list[FieldError],
                 request_id: str | None = None, code: str | None = None) -> None:
        self.status_code = status_code
        self.detail = detail
        self.errors = errors
        self.request_id = request_id
        self.code = code
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


_ERROR_BODY: TypeAdapter[ValidationErrorOut | ErrorOut] = TypeAdapter(
    ValidationErrorOut | ErrorOut)


def field_path(error: FieldError) -> str:
    """A field error's location as the API named it, dotted: ``body.lr_search.method``."""
    return ".".join(str(part) for part in error.loc)


def api_error(response: httpx.Response) -> ApiError:
    """The :class:`ApiError` subclass for an error answer, with what its body says (either
    documented shape; another body, e.g. a proxy's page, becomes the message)."""
    cls = _ERRORS.get(response.status_code, ApiError)
    try:
        body = _ERROR_BODY.validate_json(response.read())
    except (ValidationError, ValueError):
        detail = response.text.strip()[:500] or response.reason_phrase
        return cls(response.status_code, detail, [])
    if isinstance(body, ValidationErrorOut):
        return cls(response.status_code, "invalid request", body.detail)
    return cls(response.status_code, body.detail, [], body.request_id, body.code)
