"""The simulated API's wire format: reading requests and writing responses (storm-api.md).

Reading: the Bearer token, a JSON object body, the viewer-list query (`page`, `rowsPerPage`,
`harnessType`, `systemClients`, `search`); what the API would reject raises `BadRequest`.
Writing: JSON bodies, `{"message"}` errors, nginx-style HTML pages, the list page (assembled
from already-encoded records), the nested detail record and the fixed topology. No state.
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgspec
from aiohttp import web

from notifier.simulator.records import HARNESS_TYPES, ViewerQuery

__all__ = [
    "GARBAGE",
    "REASONS",
    "BadRequest",
    "Disconnect",
    "bearer",
    "detail_record",
    "html",
    "json_body",
    "json_response",
    "list_body",
    "list_params",
    "message",
    "topology",
]

REASONS: Final = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
#: The body of the "garbage" fault: neither JSON nor text.
GARBAGE: Final = b'\x00\xff\xfe{{"data": garbage ]]\x1b[0m<!-- not json -->'
_TRUE: Final = b"true"
_FALSE: Final = b"false"


class Disconnect(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a handler to close the connection without a response."""


class BadRequest(Exception):  # noqa: N818 - turned into a 400 response
    """A query parameter or body the API would reject with 400."""


# -- reading ------------------------------------------------------------------------------


def bearer(request: web.Request) -> str | None:
    """The Bearer token of the `Authorization` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request body, which must be a JSON object."""
    try:
        body = json.loads(await request.read())
    except ValueError:
        raise BadRequest("request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if value < 1:
        raise BadRequest(f"{name} must be at least 1")
    return value


def list_params(request: web.Request) -> tuple[int, int, ViewerQuery | None]:
    """`(page, rowsPerPage, filters)` of a viewer-list request; None when nothing is filtered."""
    page = _int_param(request, "page", 1)
    rows = _int_param(request, "rowsPerPage", 10)
    query = request.query
    harness = query.get("harnessType") or None
    if harness is not None and harness not in HARNESS_TYPES:
        raise BadRequest(f"harnessType must be one of {', '.join(sorted(HARNESS_TYPES))}")
    system_raw = query.get("systemClients") or None
    if system_raw not in {None, "true", "false"}:
        raise BadRequest("systemClients must be true or false")
    system = None if system_raw is None else system_raw == "true"
    search = query.get("search") or None
    if search is None and harness is None and system is None:
        return page, rows, None
    return page, rows, ViewerQuery(search, harness, system)


# -- writing ------------------------------------------------------------------------------


def json_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response."""
    return web.Response(
        status=status,
        body=msgspec.json.encode(body),
        content_type="application/json",
        headers=headers,
    )


def message(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    """An error (or logout) response: `{"message": text}`."""
    return json_response(status, {"message": text}, headers)


def html(status: int, title: str) -> web.Response:
    """An nginx-style HTML page, as a proxy in front of the API would send."""
    page = (
        f"<!DOCTYPE html>\n<html><head><title>{status} {title}</title></head>\n"
        f"<body><center><h1>{status} {title}</h1></center><hr><center>nginx</center>"
        "</body></html>\n"
    )
    return web.Response(status=status, text=page, content_type="text/html")


def list_body(
    total: int, per_page: int, page: int, items: list[bytes], *, elapsed_ms: int, generated_at: int
) -> bytes:
    """The body of one viewer-list page around `items`, each an encoded list record."""
    total_pages = -(-total // per_page)
    return b"".join(
        (
            b'{"data":{"totalItems":%d,"itemsPerPage":%d,"totalPages":%d,"currentPage":%d,'
            % (total, per_page, total_pages, page),
            b'"hasPrevious":%s,"hasNext":%s,"list":['
            % (_TRUE if page > 1 else _FALSE, _TRUE if page < total_pages else _FALSE),
            b",".join(items),
            b']},"meta":{"executionTime":%d,"generatedAt":%d}}' % (elapsed_ms, generated_at),
        )
    )


def detail_record(record: dict[str, Any]) -> dict[str, Any]:
    """A list record with the nested userAgentData/connectionData/healthData of the detail."""
    detail = dict(record)
    detail["userAgentData"] = {
        "deviceType": record["deviceType"],
        "osName": record["osName"],
        "browserName": record["browserName"],
        "userAgent": f"Mozilla/5.0 ({record['osName']}) {record['browserName']}",
    }
    detail["connectionData"] = {
        "remoteAddress": record["remoteAddress"],
        "countryCode": record["countryCode"],
        "countryName": record["countryName"],
        "startTime": record["startTime"],
        "duration": record["duration"],
        "inBandwidth": record["inBandwidth"],
        "outBandwidth": record["outBandwidth"],
        "inTotalBytes": record["inTotalBytes"],
        "outTotalBytes": record["outTotalBytes"],
    }
    detail["healthData"] = {
        "healthScore": record["healthScore"],
        "healthGrade": record.get("healthGrade"),
    }
    return detail


def topology(viewers: int) -> dict[str, Any]:
    """The `data` of `GET /api/cluster/topology`: a small fixed cluster holding `viewers`."""
    nodes = [
        {"id": "n_origin01", "name": "origin-1", "role": "ORIGIN", "host": "origin-1.example",
         "status": "ONLINE", "viewers": 0},
        {"id": "n_edge0001", "name": "edge-1", "role": "EDGE", "host": "edge-1.example",
         "status": "ONLINE", "viewers": viewers - viewers // 2},
        {"id": "n_edge0002", "name": "edge-2", "role": "EDGE", "host": "edge-2.example",
         "status": "ONLINE", "viewers": viewers // 2},
    ]  # fmt: skip
    return {"clusterId": "cl_simulator", "nodes": nodes, "totalViewers": viewers}
