"""Domain errors, each with a user-facing one-line message; every face maps them once.

A message is a `Msg`: an English template with `{name}` placeholders and its parameters. It reads
as the English text (the CLI prints it as it is), and the TUI translates it through its message
catalog: the template is the gettext msgid, and parameters that are themselves `Msg` (a status, a
verb, a nested reason) are translated in turn. Templates are plain literals at the raise site so
that the catalog's test can find them all.
"""

from __future__ import annotations

from typing import Any


class Msg(str):
    """A user-facing text: its English rendering, with the template and parameters it came from."""

    template: str
    params: dict[str, Any]

    def __new__(cls, template: str, /, **params: Any) -> Msg:
        text = super().__new__(cls, template.format(**params) if params else template)
        text.template = template
        text.params = params
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.template, self.params))


def _rebuild(template: str, params: dict[str, Any]) -> Msg:
    return Msg(template, **params)


def N_(template: str) -> str:
    """Marks a template written away from its raise (a table of messages) for the catalog."""
    return template


class Either(tuple[str, ...]):
    """Alternatives shown as "a or b" (statuses a rule allows); faces may translate each word."""

    joiner = " or "

    def __format__(self, spec: str) -> str:
        return format(self.joiner.join(self), spec)

    def __str__(self) -> str:
        return self.joiner.join(self)


class ImagehubError(Exception):
    """Base of every error meant for the user. `exit_code` is the CLI's exit status.

    `ImagehubError("image {image_id} not found", image_id=...)`: the template and its parameters.
    """

    exit_code = 1
    reason = "failed"

    def __init__(self, template: str, /, **params: Any) -> None:
        self.message = Msg(template, **params)
        super().__init__(str(self.message))

    def __str__(self) -> str:
        return str(self.message)


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
