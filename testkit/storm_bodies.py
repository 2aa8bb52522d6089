"""Generated Storm viewer-list bodies (hypothesis), and a server in a thread that serves them.

Three families: ``valid_bodies`` (the documented shape with odd but acceptable content: Unicode
ids, scores of every JSON type, unknown fields, with or without paging facts), ``near_valid``
(one of them with one thing broken: an id of another type or refused, a field of the wrong type,
a row listed twice, the bytes cut short) and ``garbage`` (any JSON, any bytes). Each is drawn
with the ids it lists, so that a test can hold detection to them (the oracle).

``BodyServer`` runs an aiohttp server on its own event loop in a thread, so that a synchronous
hypothesis test can poll it through the real client with ``asyncio.run`` per example.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import TYPE_CHECKING, Any

from aiohttp import web
from hypothesis import strategies as st

from notifier.storm.decode import MAX_ID_LENGTH

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["BodyServer", "any_body", "garbage", "near_valid", "valid_bodies"]

Drawn = tuple[bytes, list[str]]  # a body and the ids its list holds (as sent)

GOOD_IDS = st.one_of(
    st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=24),
    st.sampled_from(["v_1", "0123", "123", "a:b/c", "{sim}", " ", "x" * MAX_ID_LENGTH]),
)
SCORES = st.one_of(
    st.none(),
    st.integers(-5, 105),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
GRADES = st.one_of(
    st.none(),
    st.sampled_from(["Very Good", "Bad", "No Data", "NO_DATA", "no-data", ""]),
    st.text(max_size=8),
    st.integers(),
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def _valid(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    ids = draw(st.lists(GOOD_IDS, unique=True, max_size=8))
    rows: list[dict[str, Any]] = []
    for viewer_id in ids:
        row: dict[str, Any] = {"id": viewer_id}
        if draw(st.booleans()):
            row["healthScore"] = draw(SCORES)
        if draw(st.booleans()):
            row["healthGrade"] = draw(GRADES)
        if draw(st.booleans()):
            row["extra"] = draw(JSON)
        rows.append(row)
    data: dict[str, Any] = {"list": rows}
    paging = draw(st.sampled_from(["none", "totals", "has-next"]))
    if paging == "totals":
        data |= {"totalItems": len(rows), "itemsPerPage": max(len(rows), 1), "totalPages": 1}
    elif paging == "has-next":
        data["hasNext"] = False
    return {"data": data, "meta": {"generatedAt": 1}}, ids


def _encode(draw: st.DrawFn, body: object) -> bytes:
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode()


@st.composite
def valid_bodies(draw: st.DrawFn) -> Drawn:
    """The documented shape, odd but acceptable content: every listed id must be read as sent."""
    body, ids = draw(_valid())
    return _encode(draw, body), ids


BAD_IDS = st.one_of(
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=3), max_size=2),
    st.sampled_from(["", "a\nb", "\x00", "\x7f", "\x85", "x" * (MAX_ID_LENGTH + 1)]),
)


@st.composite
def near_valid(draw: st.DrawFn) -> Drawn:
    """A valid body with one thing broken."""
    body, ids = draw(_valid())
    rows: list[dict[str, Any]] = body["data"]["list"]
    kinds = ["data", "list", "field", "cut", "html"] + (["id", "twice"] if rows else [])
    how = draw(st.sampled_from(kinds))
    if how == "id":
        draw(st.sampled_from(rows))["id"] = draw(BAD_IDS)
    elif how == "field":
        key = draw(st.sampled_from(["totalItems", "itemsPerPage", "totalPages", "hasNext"]))
        body["data"][key] = draw(JSON)
    elif how == "data":
        body["data"] = draw(JSON)
    elif how == "list":
        body["data"]["list"] = draw(JSON)
    elif how == "twice":
        rows.append(dict(draw(st.sampled_from(rows)), healthScore=draw(SCORES)))
    raw = _encode(draw, body)
    if how == "cut":
        raw = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    elif how == "html":
        raw = b"<html><body>" + raw
    return raw, ids


@st.composite
def garbage(draw: st.DrawFn) -> Drawn:
    """Any JSON, or any bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=64)), []
    return _encode(draw, draw(JSON)), []


def any_body() -> st.SearchStrategy[Drawn]:
    """One of the three families."""
    return st.one_of(valid_bodies(), near_valid(), garbage())


class BodyServer:
    """Serves ``body`` as page 1 of the viewer list (later pages: empty), from a thread;
    ``served`` counts the page-1 answers."""

    def __init__(self) -> None:
        self.body = b'{"data": {"list": []}}'
        self.served = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _viewers(self, request: web.Request) -> web.Response:
        body = b'{"data": {"list": []}}'
        if request.query.get("page") == "1":
            self.served += 1
            body = self.body
        return web.Response(body=body, content_type="application/json")

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/cluster/viewers", self._viewers)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def __enter__(self) -> BodyServer:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
