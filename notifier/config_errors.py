"""A configuration that does not validate, said in one line a person can act on.

Each error names its origin (the file, or the ``NOTIFIER_*`` variable that set the key), the
key as written (``clusters[0].timeout``), and the problem, never the value. An unknown key
comes with the closest valid one: ``NOTIFIER_LOGGINGG__LEVEL: unknown key loggingg (did you
mean `logging`?)``.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, get_args

from pydantic import BaseModel

from notifier.sinks.config import PLUGIN_TAG, PluginSinkSettings
from notifier.sinks.registry import BUILTIN_SINKS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import ValidationError
    from pydantic_core import ErrorDetails

    from notifier.config_needs import Loc

__all__ = ["describe", "format_loc"]

_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
}


def describe(
    exc: ValidationError, *, source: str, origins: Mapping[Loc, str], root: type[BaseModel]
) -> str:
    """Up to three errors of ``exc`` (raised validating ``root``), each after its origin.

    ``origins``: the keys set by environment variables, and by which.
    """
    errors = exc.errors(include_input=False, include_url=False)
    # "at least 1 item after validation" only echoes a failing item reported on its own.
    errors = [
        err
        for err in errors
        if err["type"] != "too_short"
        or not any(
            len(o["loc"]) > len(err["loc"]) and o["loc"][: len(err["loc"])] == err["loc"]
            for o in errors
        )
    ]
    parts: list[str] = []
    previous = None
    for err in errors[:3]:
        var, text = _describe_one(err, origins, root)
        origin = var or source
        parts.append(text if origin == previous else f"{origin}: {text}")
        previous = origin
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _describe_one(
    err: ErrorDetails, origins: Mapping[Loc, str], root: type[BaseModel]
) -> tuple[str | None, str]:
    """The variable the error comes from (None: the file), and the error."""
    loc = _strip_tags(err["loc"])
    where = format_loc(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        # A variable naming an unknown section or key created it: that variable is to blame.
        var = next((v for key, v in origins.items() if key[: len(loc)] == loc), None)
        hint = _did_you_mean(err["loc"], root)
        return var, (f"unknown key {where}" if var else f"{where}: unknown key") + hint
    message = _unknown_sink_type() if err["type"] == "sink_type" else err["msg"]
    message = _MESSAGES.get(err["type"], message)
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = message[:1].lower() + message[1:]
    var = next((v for key, v in origins.items() if loc[: len(key)] == key), None)
    return var, f"{where}: {message}"


def _unknown_sink_type() -> str:
    return f"unknown sink type (built in: {', '.join(BUILTIN_SINKS)})"


def _did_you_mean(raw: Loc, root: type[BaseModel]) -> str:
    """`` (did you mean `logging`?)`` for an unknown key close to a valid one, else ``""``."""
    close = difflib.get_close_matches(str(raw[-1]), _keys_at(raw[:-1], root), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _keys_at(raw: Loc, root: type[BaseModel]) -> list[str]:
    """The valid keys of the section at ``raw`` (pydantic's location: sink type tags in it)."""
    models: list[type[BaseModel]] = [root]
    for part in raw:
        if isinstance(part, int):
            continue  # an item of a list: the list's model
        if len(models) > 1:  # the sinks union: pydantic put the item's tag here
            factory = BUILTIN_SINKS.get(part)
            models = [factory.settings_model] if factory is not None else [PluginSinkSettings]
            continue
        field = models[0].model_fields.get(part) if models else None
        models = _models_in(field.annotation) if field is not None else []
    return list(models[0].model_fields) if len(models) == 1 else []


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _strip_tags(loc: Loc) -> Loc:
    # A discriminated union adds the tag ("webhook") after the list index; users never wrote it.
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if i >= 2 and loc[0] == "sinks" and i == 2 and part in (*BUILTIN_SINKS, PLUGIN_TAG):
            continue
        out.append(part)
    return tuple(out)


def format_loc(loc: Loc) -> str:
    """``clusters[0].auth.token``: a location as the key is written."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
