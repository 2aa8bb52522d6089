"""Write the README's console screenshots: ``.venv/bin/python docs/screenshots.py``.

Starts what the browser test starts (``testkit.console_site``), with more to look at: a real
redis-server on a free port, the simulator with 900 viewers that come, go and change health,
a ramp on ``sports-hd`` and a health incident on ``main``; the service with three sinks (a
webhook that accepts, one whose receiver answers 503 so it retries, a stdout sink). After
``--seconds`` (default 240, so the charts have a few minutes of history) headless Chromium
writes ``docs/images/console.png`` (1280 wide) and ``docs/images/console-narrow.png`` (a phone,
390 wide). Needs redis-server, chromium (``/usr/bin/chromium``) and the dev extra (playwright).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # testkit lives beside the package, not inside it

from playwright.async_api import FloatRect, ViewportSize, async_playwright  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from notifier.simulator import (  # noqa: E402
    Incident,
    PopulationSettings,
    Ramp,
    SimulatorSettings,
)
from testkit.console_site import SIM_TOKEN, running_console  # noqa: E402
from testkit.receivers import Reply, WebhookReceiver  # noqa: E402
from testkit.redis_procs import RedisServer  # noqa: E402

IMAGES = ROOT / "docs" / "images"
CHROMIUM = "/usr/bin/chromium"
WIDE: ViewportSize = {"width": 1280, "height": 800}
NARROW: ViewportSize = {"width": 390, "height": 844}
MAX_HEIGHT = {"wide": 1700, "narrow": 1600}


async def shoot(seconds: float) -> list[Path]:
    """Run the setup for ``seconds`` and write both screenshots; returns their paths."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    population = PopulationSettings(
        seed=3,
        viewers=900,
        incidents=(Incident("main", 45_000, 3_600_000, 0.45),),
        ramps=(Ramp("sports-hd", 700, 150_000),),
    )
    simulator = SimulatorSettings(population=population, static_tokens=(SIM_TOKEN,), tick=1.0)
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        redis = Redis.from_url(server.url)
        async with WebhookReceiver(secret) as hooks, WebhookReceiver(secret) as crm:
            crm.default = Reply(503, body=b"maintenance")
            sinks = (
                {"name": "hooks", "type": "webhook", "url": hooks.url, "secret": secret},
                {
                    "name": "crm",
                    "type": "webhook",
                    "url": crm.url,
                    "secret": secret,
                    "events": ["viewer.connected", "viewer.disconnected"],
                },
                {"name": "audit", "type": "stdout", "events": ["stream.health_degraded"]},
            )
            token = secrets.token_hex(16)
            async with running_console(
                redis, server.url, simulator, token=token, sinks=sinks, cluster="eu-1",
                poll_interval="1s",
            ) as site:  # fmt: skip
                print(f"console at {site.url}/ - waiting {seconds:g}s for history", flush=True)
                await asyncio.sleep(seconds)  # let the audience history build up
                written = await _capture(site.url, site.headers)
        await redis.aclose()
    return written


async def _capture(url: str, headers: dict[str, str]) -> list[Path]:
    IMAGES.mkdir(parents=True, exist_ok=True)
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    written: list[Path] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        for name, viewport in (("wide", WIDE), ("narrow", NARROW)):
            context = await browser.new_context(
                extra_http_headers=headers, viewport=viewport, color_scheme="light"
            )
            page = await context.new_page()
            await page.goto(url + "/")
            height = await page.evaluate("document.documentElement.scrollHeight")
            path = IMAGES / ("console.png" if name == "wide" else "console-narrow.png")
            clip: FloatRect = {
                "x": 0,
                "y": 0,
                "width": viewport["width"],
                "height": min(height, MAX_HEIGHT[name]),
            }
            await page.screenshot(path=str(path), full_page=True, clip=clip)
            written.append(path)
            await context.close()
        await browser.close()
    return written


def main() -> int:
    """Parse ``--seconds``, shoot, print where the files went."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0, help="history to build first")
    options = parser.parse_args()
    for path in asyncio.run(shoot(options.seconds)):
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
