"""How every error is answered over HTTP, in one place."""

from __future__ import annotations

from typing import Any

from service.client.schemas import ErrorOut


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route answers."""
    why = {400: "the body is not JSON text (not UTF-8)", 401: "the API token is missing",
           403: "the API token is wrong", 404: "no such resource",
           409: "not in a state that allows it", 413: "the request body is too large",
           503: "the database is unreachable"}
    return {code: {"model": ErrorOut, "description": why[code]} for code in codes}
