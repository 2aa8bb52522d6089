"""The demo's webhook receiver: an endpoint on 127.0.0.1 that checks every Standard Webhooks
signature the way a receiver should (the signing key, ``id.timestamp.body``, a timestamp within
five minutes) and counts what verified and what it refused (401)."""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING

from aiohttp import web

from notifier.sinks.webhook.config import signing_key
from notifier.sinks.webhook.sink import sign

if TYPE_CHECKING:
    from pydantic import SecretStr

__all__ = ["Receiver"]

TOLERANCE = 300  # seconds a webhook-timestamp may be off, as standardwebhooks allows


class Receiver:
    """A webhook endpoint on a free port of 127.0.0.1; ``url`` once started."""

    def __init__(self, secret: SecretStr) -> None:
        self._key = signing_key(secret)
        self.verified = 0
        self.rejected = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on a free port."""
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def aclose(self) -> None:
        """Stop listening; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        message_id = request.headers.get("webhook-id", "")
        timestamp = request.headers.get("webhook-timestamp", "")
        sent_at = int(timestamp) if timestamp.isdigit() else 0
        expected = sign([self._key], message_id, sent_at, body).split()
        offered = request.headers.get("webhook-signature", "").split()
        fresh = abs(time.time() - sent_at) < TOLERANCE
        if fresh and any(hmac.compare_digest(e, o) for e in expected for o in offered):
            self.verified += 1
            return web.Response(status=204)
        self.rejected += 1
        return web.Response(status=401)
