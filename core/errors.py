"""Domain errors, each with a user-facing one-line message; every face maps them once."""

from __future__ import annotations


class ImagehubError(Exception):
    """Base of every error meant for the user. `exit_code` is the CLI's exit status."""

    exit_code = 1
    reason = "failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Failed(ImagehubError):
    """The operation ran and failed."""


class Invalid(ImagehubError):
    """Bad usage or an invalid value."""

    exit_code = 2
    reason = "invalid"


class NotFound(ImagehubError):
    """Does not exist, or is not visible to the caller (the two are never told apart)."""

    exit_code = 3
    reason = "not_found"


class Forbidden(ImagehubError):
    """Visible, but the caller may not do this."""

    exit_code = 4
    reason = "forbidden"


class Conflict(ImagehubError):
    """Not allowed in the current state (status, VM in use, already exists)."""

    exit_code = 5
    reason = "conflict"
