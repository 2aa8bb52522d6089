"""The console in a real headless Chromium: it shows what /api/status reports, and refreshes.

Playwright drives the system Chromium (Debian's ``chromium``, ``/usr/bin/chromium``); its own
browser downloads are never used. Without chromium or playwright the test fails under
``CI=true`` (``.ci/run`` installs both) and is skipped with the reason elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from notifier.simulator import PopulationSettings, SimulatorSettings
from testkit.console_site import SIM_TOKEN, ConsoleSite, eventually, running_console

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from playwright.async_api import Browser
    from redis.asyncio import Redis

    from testkit.redis_procs import RedisServer

CHROMIUM = "/usr/bin/chromium"
TOKEN = "browser-test-token-7d3e"
IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
SINKS = (
    {"name": "out", "type": "stdout"},
    {"name": "audit", "type": "stdout", "events": ["viewer.connected"]},
)


def _chromium() -> str | None:
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[dev]')"
    if _chromium() is None:
        return f"chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless system Chromium; fails under CI=true, else skips, when it cannot start."""
    if (missing := _missing()) is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the console's browser test needs {missing}", pytrace=False)
        pytest.skip(missing)
    from playwright.async_api import async_playwright  # noqa: PLC0415 - optional, checked above

    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=_chromium(), args=args)
        try:
            yield launched
        finally:
            await launched.close()


def cluster_of(status: dict[str, Any], name: str) -> dict[str, Any]:
    """The cluster called ``name`` in an /api/status answer."""
    return next(c for c in status["clusters"] if c["name"] == name)


@pytest.mark.timeout(120)
async def test_the_page_shows_what_the_api_reports_and_refreshes(
    browser: Browser, redis_server: RedisServer, redis_url: str, redis: Redis
) -> None:
    """Over the real service and simulator: the page shows the cluster, both sinks and the
    tracked-viewer count /api/status reports; without the token it is refused; when viewers
    join, the script swaps in the new count without reloading the page; no IP address shows,
    and the browser reports no error (a CSP violation would be one); while Redis is down the
    header says the refresh failed and why, and the last data stays until it is back."""
    simulator = SimulatorSettings(
        population=PopulationSettings(seed=12, viewers=1_234), static_tokens=(SIM_TOKEN,)
    )
    async with (
        running_console(redis, redis_url, simulator, token=TOKEN, sinks=SINKS) as site,
        aiohttp.ClientSession() as http,
    ):
        expected = len(site.sim.population.ids())
        await until_tracked(site, http, expected)
        status = await site.status(http)
        tracked = cluster_of(status, "sim")["tracked_viewers"]
        assert tracked == expected

        anonymous = await browser.new_context()
        refused = await (await anonymous.new_page()).goto(site.url + "/")
        assert refused is not None
        assert refused.status == 401
        await anonymous.close()

        context = await browser.new_context(
            extra_http_headers=site.headers, viewport={"width": 1280, "height": 800}
        )
        page = await context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        response = await page.goto(site.url + "/")
        assert response is not None
        assert response.status == 200

        card = page.locator('[data-cluster="sim"]')
        assert (await card.locator("h3").inner_text()) == "sim"
        shown = card.locator('[data-field="tracked_viewers"]')
        assert (await shown.inner_text()) == f"{tracked:,}"
        for sink in status["sinks"]:
            name = page.locator(f'[data-sink="{sink["name"]}"] .name')
            assert (await name.inner_text()) == sink["name"]
        assert {s["name"] for s in status["sinks"]} == {"out", "audit"}
        text = await page.locator("body").inner_text()
        assert not IPV4.search(text), IPV4.findall(text)

        await page.evaluate("window.__sameDocument = true")
        site.sim.population.join(66)
        await until_tracked(site, http, expected + 66)
        now = cluster_of(await site.status(http), "sim")["tracked_viewers"]
        await page.wait_for_function(
            """want => document.querySelector('[data-cluster="sim"] [data-field="tracked_viewers"]')
                .textContent === want""",
            arg=f"{now:,}",
            timeout=30_000,
        )
        assert await page.evaluate("window.__sameDocument === true")
        assert (await page.locator("#refresh").inner_text()).startswith("live")
        assert problems == []

        redis_server.stop()  # the refresh fails: said in the header, the last data stays
        await page.wait_for_function(
            "() => document.getElementById('refresh').textContent.startsWith('refresh failed')",
            timeout=30_000,
        )
        note = await page.locator("#refresh").inner_text()
        assert "HTTP 503: redis: unreachable" in note, note
        assert (await shown.inner_text()) == f"{now:,}"
        redis_server.restart()
        await page.wait_for_function(
            "() => document.getElementById('refresh').textContent.startsWith('live')",
            timeout=30_000,
        )
        await context.close()


async def until_tracked(site: ConsoleSite, http: aiohttp.ClientSession, count: int) -> None:
    """Wait until /api/status reports ``count`` tracked viewers of cluster ``sim``."""

    async def reached() -> bool:
        return bool(cluster_of(await site.status(http), "sim")["tracked_viewers"] == count)

    await eventually(reached, timeout=30, what=f"/api/status reports {count} tracked viewers")
