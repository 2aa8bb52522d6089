"""The base of every settings model, and the small value types they share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from .durations import parse_duration

__all__ = ["Frozen", "Name", "PositiveSeconds", "Seconds"]


class Frozen(BaseModel):
    """Validated once at start-up, immutable after; unknown keys are errors, inputs never echoed."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        coerce_numbers_to_str=True,
        hide_input_in_errors=True,
        validate_default=True,
    )


_DURATION_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"},
            {"type": "number", "minimum": 0},
        ],
        "description": "a duration: 500ms, 5s, 2m, 1h (a bare number is seconds)",
    }
)

Seconds = Annotated[float, BeforeValidator(parse_duration), _DURATION_SCHEMA]
"""A duration in the config (``500ms``, ``5s``, ``2m``, ``1h``), held as seconds."""

PositiveSeconds = Annotated[Seconds, Field(gt=0)]

Name = Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,40}$")]
"""A cluster or sink name: it appears in Redis keys, metrics and events."""
