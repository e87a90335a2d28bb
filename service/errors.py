"""Domain errors, answered over HTTP once, in service.http_errors."""

from __future__ import annotations


class NotFound(LookupError):
    def __init__(self, what: str, ident: object) -> None:
        super().__init__(f"{what} {ident} not found")


class Conflict(RuntimeError):
    """The request is valid but illegal in the resource's current state."""


class Unavailable(RuntimeError):
    """A dependency (database, Ray) cannot be reached."""
