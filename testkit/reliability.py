"""The fault tests' own record of what they tried, for ``docs/reliability.md``.

A fault test says what it is with a marker and counts what it did with the ``tally`` fixture::

    @pytest.mark.reliability(
        fault="Redis killed and restarted from its AOF",
        injected="SIGKILL of redis-server, 8 s down, restart (appendfsync always); twice",
        checked="stream exactly the ground truth; every event delivered; /readyz 503, then 200",
    )
    async def test_...(tally: Tally) -> None:
        ...
        tally.tried += 1          # each time the fault is injected (or hit)
        tally.events = len(events)  # events checked against the truth
        tally.lost = ...          # what the check found (left None: the test asserts 0)

At the end of a session that ran any of them, the plugin merges each one's outcome and tally
into ``.reliability/results.json`` (``$RELIABILITY_RESULTS`` overrides the path): a run of one
file updates only its own rows. ``python -m docs.reliability`` turns that into the table of
``docs/reliability.md``; with ``$RELIABILITY_MANIFEST`` set, a collecting session (``pytest
--collect-only -m reliability``) writes every marked test's words there, which
``tests/test_reliability_doc.py`` compares with the table, so the doc cannot drift from the
tests.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["FIELDS", "Tally", "install", "results_path", "tally", "words"]

FIELDS = ("fault", "injected", "checked")
"""The marker's keywords, each a sentence of the table."""
_KEY = pytest.StashKey[dict[str, dict[str, Any]]]()


@dataclass
class Tally:
    """What one fault test did: faults tried, events checked, and what the check found."""

    tried: int = 0
    events: int = 0
    lost: int | None = None
    duplicated: int | None = None
    invented: int | None = None


def results_path(root: Path) -> Path:
    """Where the results of the marked tests are kept."""
    return Path(os.environ.get("RELIABILITY_RESULTS", root / ".reliability" / "results.json"))


def install(config: pytest.Config) -> None:
    """Register the marker and the hooks (from ``pytest_configure``)."""
    config.addinivalue_line(
        "markers",
        "reliability(fault, injected, checked): a fault test, a row of docs/reliability.md",
    )
    config.stash[_KEY] = {}
    config.pluginmanager.register(_Plugin(config), "reliability")


def words(item: pytest.Item) -> dict[str, str] | None:
    """The marker's words of a test; None if it has no marker. A marker without all three
    is a mistake the collection reports."""
    marker = item.get_closest_marker("reliability")
    if marker is None:
        return None
    missing = [name for name in FIELDS if not marker.kwargs.get(name)]
    if missing or marker.args:
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.reliability needs keywords {', '.join(FIELDS)}"
            f" (missing: {', '.join(missing) or 'none'}; no positional arguments)"
        )
    return {name: " ".join(str(marker.kwargs[name]).split()) for name in FIELDS}


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Tally:
    """The tally of the running fault test (kept with its outcome)."""
    found = Tally()
    request.node.stash[_TALLY] = found
    return found


_TALLY = pytest.StashKey[Tally]()


class _Plugin:
    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._rows = config.stash[_KEY]

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        manifest = {item.nodeid: said for item in items if (said := words(item)) is not None}
        target = os.environ.get("RELIABILITY_MANIFEST")
        if target:
            Path(target).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item) -> Any:
        report = yield
        said = words(item)
        if said is None:
            return report
        if report.when == "call" or (report.when == "setup" and not report.passed):
            found = item.stash.get(_TALLY, Tally())
            self._rows[item.nodeid] = {
                **said,
                **asdict(found),
                "outcome": report.outcome,
                "seconds": round(report.duration, 1),
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        return report

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self._rows:
            return
        path = results_path(Path(str(session.config.rootpath)))
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            kept = json.loads(path.read_text())
        except (OSError, ValueError):
            kept = {}
        for node, row in self._rows.items():  # runs: every session that recorded the test
            kept[node] = {**row, "runs": int(kept.get(node, {}).get("runs", 0)) + 1}
        path.write_text(json.dumps(kept, indent=1, sort_keys=True) + "\n")
