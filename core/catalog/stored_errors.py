"""A failure reason kept with its template and parameters, so that a face can show it in its language.

An image's or job's `error` column holds the English text (the CLI prints it, the JSON contract
carries it). Beside it, `error_detail` holds the `Msg` it came from as JSON,
`{"template": ..., "params": {...}}`: a parameter that is itself a `Msg` is an object of the same
shape, an `Either` is `{"either": [...]}`, numbers stay numbers, anything else is its text.
`stored_reason` turns the two columns back into a `Msg` whose text is the stored English text;
a row without detail (written before templates were kept, or a reason that was never a `Msg`)
stays the plain English text.
"""

from __future__ import annotations

import json
from typing import Any

from core.catalog.errors import Either, ImagehubError, Msg


def detail_of(reason: str | None) -> str | None:
    """The `error_detail` JSON of `reason`: its template and parameters if it is a `Msg`, else None."""
    if isinstance(reason, ImagehubError):
        reason = reason.message
    if not isinstance(reason, Msg):
        return None
    return json.dumps(_encoded(reason), ensure_ascii=False, sort_keys=True)


def _encoded(value: object) -> Any:
    if isinstance(value, ImagehubError):
        value = value.message
    if isinstance(value, Msg):
        return {"template": value.template, "params": {name: _encoded(param) for name, param in value.params.items()}}
    if isinstance(value, Either):
        return {"either": [_encoded(word) for word in value]}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def stored_reason(text: str | None, detail: str | None) -> str | None:
    """The stored English `text`, as a `Msg` with the template and parameters of `detail` when there
    are any (its text stays exactly `text`)."""
    if text is None or not detail:
        return text
    try:
        encoded = json.loads(detail)
    except ValueError:
        return text
    if not (isinstance(encoded, dict) and isinstance(encoded.get("template"), str)):
        return text
    return _with_text(text, encoded["template"], _decoded_params(encoded.get("params")))


def _decoded_params(params: object) -> dict[str, Any]:
    if not isinstance(params, dict):
        return {}
    return {str(name): _decoded(value) for name, value in params.items()}


def _decoded(value: object) -> Any:
    if isinstance(value, dict):
        if isinstance(value.get("template"), str):
            template, params = value["template"], _decoded_params(value.get("params"))
            try:
                return Msg(template, **params)
            except (KeyError, IndexError, ValueError):
                return _with_text(template, template, params)
        if isinstance(value.get("either"), list):
            return Either(_decoded(word) for word in value["either"])
    return value


def _with_text(text: str, template: str, params: dict[str, Any]) -> Msg:
    """A `Msg` of `template` and `params` that reads as `text` (not formatted again)."""
    message = str.__new__(Msg, text)
    message.template = template
    message.params = params
    return message
