"""``server.auth_token``: every path but the open ones needs ``Authorization: Bearer <token>``.

The comparison is constant-time over SHA-256 digests of the presented and the expected token,
so neither the content nor the length of the token leaks through timing. A refusal is a 401
with ``WWW-Authenticate: Bearer`` and a body that never echoes what was sent; it is logged at
debug level with the path and why (``missing``, ``not_bearer``, ``wrong``), never the token.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Collection

    from aiohttp.typedefs import Handler, Middleware
    from pydantic import SecretStr

__all__ = ["OPEN_PATHS", "bearer_auth"]

log = structlog.get_logger("notifier.endpoint")

OPEN_PATHS = frozenset({"/healthz"})
"""Answered without a token: liveness probes cannot carry one."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def refusal(header: str | None, expected: bytes) -> str | None:
    """Why an ``Authorization`` header does not carry the token (``None``: it does)."""
    if not header:
        return "missing"
    scheme, _, credential = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return "not_bearer"
    if not hmac.compare_digest(_digest(credential.strip()), expected):
        return "wrong"
    return None


def bearer_auth(token: SecretStr, *, open_paths: Collection[str] = OPEN_PATHS) -> Middleware:
    """An aiohttp middleware that answers 401 unless the request carries ``token``."""
    expected = _digest(token.get_secret_value())

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths:
            return await handler(request)
        reason = refusal(request.headers.get("Authorization"), expected)
        if reason is None:
            return await handler(request)
        log.debug("endpoint.unauthorized", path=request.path, reason=reason)
        return web.Response(
            status=401,
            text="unauthorized: send Authorization: Bearer <server.auth_token>\n",
            headers={
                "WWW-Authenticate": 'Bearer realm="storm-notifier"',
                "Cache-Control": "no-store",
            },
        )

    return middleware
