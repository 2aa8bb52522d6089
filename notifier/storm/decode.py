"""Decoding Storm API bodies: fast (msgspec), strict where it matters, verbatim where it travels.

A viewer list page is decoded twice by msgspec in C: once into raw byte slices of each viewer
record (they travel into events exactly as the API sent them, unknown fields included) and once
into the few fields detection needs. No per-viewer pydantic, no per-viewer dict, and no copy of
a listed record: it is a ``msgspec.Raw`` view of the page's body (``Viewer.raw``), copied only
where it is kept beyond the poll (``Viewer.record_bytes``).

Bodies that are not JSON at all raise ``MalformedBody`` (worth a retry); JSON of the wrong shape
raises ``StormSchemaError``.

Viewer ids are taken exactly as sent, or not at all. The API documents a string; a number is
refused rather than turned into one, since ``"0123"`` in one poll and ``123`` in the next would be
two viewers, one connect invented. A string id is accepted verbatim (any Unicode, spaces, ``:``
and ``/``: Redis, the events and the partition hash take any string) unless it is empty, longer
than ``MAX_ID_LENGTH`` characters, or holds a control character (it would corrupt log lines and
messages). An id refused makes the whole poll incomplete (``kind`` ``viewer_id``): a poll that
leaves one viewer out would disconnect it.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Annotated, Any

import msgspec

from notifier.errors import StormSchemaError

__all__ = [
    "MAX_ID_LENGTH",
    "NO_DATA_GRADE",
    "MalformedBody",
    "Page",
    "Viewer",
    "decode_error_message",
    "decode_found",
    "decode_page",
    "decode_viewer",
    "describe_status",
]

MAX_ID_LENGTH = 256  # characters; Storm's ids are about 20
NO_DATA_GRADE = "No Data"
_NO_DATA_KEY = "nodata"  # NO_DATA_GRADE normalised by _grade_key


class Viewer(msgspec.Struct, frozen=True, gc=False):
    """One viewer of one poll.

    ``health`` is the score when the server has a measurement and ``None`` when it has none
    (``healthGrade`` "No Data" in any spelling, or score 0 with no or an empty grade, or no
    usable score at all).
    ``raw`` is the record exactly as the API returned it (JSON bytes): from a list page, a view
    of the page's body (which it keeps alive); ``record_bytes`` is a copy of its own. A view
    is neither equal to bytes nor hashable nor joined with ``+``: compare, keep or concatenate
    ``record_bytes()``.
    """

    id: str
    health: float | None
    health_grade: str | None
    raw: bytes | msgspec.Raw

    def record_bytes(self) -> bytes:
        """The record as ``bytes`` (a copy of a view; ``raw`` itself if it is bytes already)."""
        return bytes(self.raw)

    def record(self) -> dict[str, Any]:
        """The record as a dict (decoded on demand; the hot path never needs it)."""
        value: dict[str, Any] = msgspec.json.decode(self.raw)
        return value


class Page(msgspec.Struct, frozen=True):
    """One page of GET /api/cluster/viewers, with whatever paging facts the server gave."""

    viewers: list[Viewer]
    total_items: int | None
    items_per_page: int | None
    total_pages: int | None
    current_page: int | None
    has_next: bool | None


# Two views of one body, decoded by msgspec; unknown fields are skipped in C.
class _Core(msgspec.Struct, gc=False):
    """The fields detection reads, whatever their JSON types."""

    id: Any = None
    healthScore: Any = None  # noqa: N815 - the API's spelling
    healthGrade: Any = None  # noqa: N815


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]


class _TypedCore(msgspec.Struct, gc=False):
    """The same fields as the API documents them, typed in C: the common case, decoded first.
    Its ids are strings of 1 to ``MAX_ID_LENGTH`` characters.

    A page with anything else in them (a score sent as a bool, an id missing, empty or a
    number, say) is decoded again as ``_Core``, whose per-viewer checks decide what each odd
    value means.
    """

    id: _Id
    healthScore: float | str | None = None  # noqa: N815
    healthGrade: str | None = None  # noqa: N815


class _CoreData(msgspec.Struct):
    rows: list[_Core] | None = msgspec.field(default=None, name="list")


class _CoreBody(msgspec.Struct):
    data: _CoreData


class _TypedData(msgspec.Struct):
    rows: list[_TypedCore] | None = msgspec.field(default=None, name="list")


class _TypedBody(msgspec.Struct):
    data: _TypedData


class _RawData(msgspec.Struct, rename="camel"):
    rows: list[msgspec.Raw] | None = msgspec.field(default=None, name="list")
    total_items: int | None = None
    items_per_page: int | None = None
    total_pages: int | None = None
    current_page: int | None = None
    has_next: bool | None = None


class _RawBody(msgspec.Struct):
    data: _RawData


class _BatchData(msgspec.Struct):
    found: list[msgspec.Raw] | None = None


class _BatchBody(msgspec.Struct):
    data: _BatchData


class _Message(msgspec.Struct):
    message: Any = None


_raw_decoder = msgspec.json.Decoder(_RawBody, strict=False)  # "3" or "true" paging values
_core_decoder = msgspec.json.Decoder(_CoreBody)
_typed_decoder = msgspec.json.Decoder(_TypedBody)
_grade_keys: dict[str, str] = {}  # grade -> _grade_key(grade): a server sends a handful of grades
_GRADE_KEYS_MAX = 1024
_message_decoder = msgspec.json.Decoder(_Message)
_batch_decoder = msgspec.json.Decoder(_BatchBody)


class MalformedBody(ValueError):  # noqa: N818 - internal signal, caught by the client
    """The body is not JSON at all (truncated, HTML, garbage): worth retrying."""


def decode_page(body: bytes) -> Page:
    """Decode a 200 body; ``MalformedBody`` if it is not JSON, ``StormSchemaError`` if misshapen."""
    try:
        raw = _raw_decoder.decode(body)
        typed: list[_TypedCore] | None
        odd: list[_Core] = []
        try:
            typed = _typed_decoder.decode(body).data.rows or []
        except msgspec.ValidationError:
            typed, odd = None, _core_decoder.decode(body).data.rows or []
    except msgspec.ValidationError as exc:
        raise StormSchemaError(f"unexpected viewer list shape: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"body is not valid JSON ({exc})") from None
    data = raw.data
    total_items = _non_negative(data.total_items)
    if data.rows is None and total_items:
        raise StormSchemaError(
            f"the viewer list has no $.data.list but reports totalItems {total_items}"
        )
    raws = data.rows or []
    return Page(
        viewers=_viewers(typed, raws) if typed is not None else _odd_viewers(odd, raws),
        total_items=total_items,
        items_per_page=_positive(data.items_per_page),
        total_pages=_non_negative(data.total_pages),
        current_page=_positive(data.current_page),
        has_next=data.has_next,
    )


def decode_viewer(record: bytes, where: str = "$") -> Viewer:
    """Decode one viewer record (a batch lookup's ``found`` item, found at ``where``)."""
    try:
        core = msgspec.json.decode(record, type=_Core)
    except msgspec.ValidationError as exc:
        raise StormSchemaError(f"unexpected viewer record shape: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"body is not valid JSON ({exc})") from None
    return _viewer(where, core, record)


def decode_found(body: bytes) -> list[Viewer]:
    """The ``data.found`` records of a batch lookup body (``POST /api/cluster/viewers/batch``)."""
    try:
        parsed = _batch_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise StormSchemaError(f"unexpected batch lookup shape: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"batch lookup body is not valid JSON ({exc})") from None
    found = parsed.data.found or []
    return [decode_viewer(bytes(raw), f"$.data.found[{i}]") for i, raw in enumerate(found)]


def _viewers(cores: list[_TypedCore], raws: list[msgspec.Raw]) -> list[Viewer]:
    """A typed page's viewers: ``_viewer`` of each, with the common case (a printable id, a
    float score, a grade or none) done inline: this loop runs once per viewer per poll.
    """
    viewers: list[Viewer] = []
    append = viewers.append
    keys, isfinite = _grade_keys, math.isfinite
    for index, (core, raw) in enumerate(zip(cores, raws, strict=True)):
        viewer_id, score, grade = core.id, core.healthScore, core.healthGrade
        if type(score) is not float or not viewer_id.isprintable():  # rare: _viewer decides
            append(_viewer(f"$.data.list[{index}]", core, raw))
            continue
        if grade is None:
            key = ""
        elif (key := keys.get(grade)) is None:  # type: ignore[assignment]
            key = _grade_key(grade)
            if len(keys) < _GRADE_KEYS_MAX:
                keys[grade] = key
        health = None if key == _NO_DATA_KEY or not isfinite(score) or not (score or key) else score
        append(Viewer(viewer_id, health, grade, raw))
    return viewers


def _odd_viewers(cores: list[_Core], raws: list[msgspec.Raw]) -> list[Viewer]:
    """The viewers of a page with odd types in it (``_Core``), each checked by ``_viewer``."""
    return [
        _viewer(f"$.data.list[{index}]", core, raw)
        for index, (core, raw) in enumerate(zip(cores, raws, strict=True))
    ]


def _viewer(where: str, core: _Core | _TypedCore, raw: bytes | msgspec.Raw) -> Viewer:
    viewer_id = core.id
    if viewer_id is None:
        raise StormSchemaError(f"viewer record at {where} has no id")
    if not isinstance(viewer_id, str):
        raise StormSchemaError(
            f"viewer record at {where} has an id of type {_json_type(viewer_id)}"
            " (the API documents a string)",
            kind="viewer_id",
        )
    problem = _id_problem(viewer_id)
    if problem is not None:
        raise StormSchemaError(f"viewer record at {where} has {problem}", kind="viewer_id")
    grade = core.healthGrade if isinstance(core.healthGrade, str) else None
    return Viewer(
        id=viewer_id, health=_health(core.healthScore, grade), health_grade=grade, raw=raw
    )


def _id_problem(viewer_id: str) -> str | None:
    """Why a string id is refused (module doc), or None if it is accepted."""
    if not viewer_id:
        return "an empty id"
    if len(viewer_id) > MAX_ID_LENGTH:
        return f"an id of {len(viewer_id)} characters (at most {MAX_ID_LENGTH})"
    for char in viewer_id:
        if unicodedata.category(char) in ("Cc", "Cs"):
            return f"an id with the control character U+{ord(char):04X}"
    return None


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _health(score: object, grade: str | None) -> float | None:
    """The measured score, or None when the server has no measurement."""
    key = None if grade is None else _grade_key(grade)
    if key == _NO_DATA_KEY:
        return None
    if isinstance(score, str):
        try:
            score = float(score)
        except ValueError:
            return None
    if isinstance(score, bool) or not isinstance(score, int | float):
        return None
    if not math.isfinite(score) or (score == 0 and not key):  # 0 and no grade: no data
        return None
    return float(score)


def _grade_key(grade: str) -> str:
    """A grade compared loosely: "NO DATA", "No data", "no_data" and "no-data" are one grade."""
    return "".join(grade.split()).replace("_", "").replace("-", "").casefold()


def decode_error_message(body: bytes) -> str | None:
    """The ``message`` of an error body, cut to one short line; None if there is none."""
    try:
        message = _message_decoder.decode(body).message
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not isinstance(message, str):
        return None
    return " ".join(message.split())[:200] or None


def describe_status(status: int, body: bytes) -> str:
    """``HTTP 503: <the server's message>``, or ``HTTP 503`` when the body carries none."""
    message = decode_error_message(body)
    return f"HTTP {status}" + (f": {message}" if message else "")


def _positive(value: int | None) -> int | None:
    return value if value is not None and value > 0 else None


def _non_negative(value: int | None) -> int | None:
    return value if value is not None and value >= 0 else None
