"""docs/operations.md tells the truth about the log events and metrics the code emits."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from notifier.metrics import Metrics

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "operations.md"
PACKAGE = ROOT / "notifier"
EVENT = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")
LEVELS = {"debug": "debug", "info": "info", "warning": "warning", "warn": "warning",
          "error": "error", "exception": "error", "critical": "critical", "fatal": "critical",
          "msg": "info"}  # fmt: skip
LEVELS |= {f"a{name}": level for name, level in LEVELS.items()}  # structlog's async methods
SUFFIX = {"counter": "_total", "histogram": "", "gauge": ""}


def _section(title: str) -> str:
    """The text of one ``## title`` section of the document."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def _rows(section: str) -> list[list[str]]:
    """The cells of every table row of a section, header and rule left out."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|") and not re.match(r"\|\s*-", line)
    ]
    return rows[1:] if rows else rows


def _logged() -> dict[str, set[str]]:
    """Each ``component.event`` the package logs, with the levels it is logged at: any call
    ``<logger>.<level>("component.event", ...)``, bound loggers included."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            level = LEVELS.get(node.func.attr)
            first = node.args[0] if node.args else None
            name = first.value if isinstance(first, ast.Constant) else None
            if level and isinstance(name, str) and EVENT.fullmatch(name):
                found[name].add(level)
    return found


def _log_table() -> dict[str, set[str]]:
    """Each event of the log table, with the levels its row gives it: one level for all the
    row's events, one level per event in order, or the row's levels for each."""
    table: dict[str, set[str]] = {}
    for cells in _rows(_section("Logs")):
        events = re.findall(r"`([^`]+)`", cells[0])
        levels = [level.strip() for level in cells[1].split(",")]
        assert events, cells
        for n, event in enumerate(events):
            assert event not in table, f"{event} is in two rows"
            table[event] = {levels[n]} if len(levels) == len(events) else set(levels)
    return table


def test_every_logged_event_is_in_the_log_table_and_no_other() -> None:
    """The log table lists every event the code logs at info or above, at its level, and no
    event the code does not log; debug events are named in the Logs section too."""
    logged, table = _logged(), _log_table()
    assert len(logged) > 40  # the scan found the code's events
    loud = {event for event, levels in logged.items() if levels - {"debug"}}
    missing = sorted(loud - set(table))
    assert not missing, f"logged but not in docs/operations.md's log table: {missing}"
    stale = sorted(set(table) - set(logged))
    assert not stale, f"in the log table but never logged: {stale}"
    wrong = {e: sorted(logged[e] - {"debug"}) for e in loud if logged[e] - {"debug"} - table[e]}
    assert not wrong, f"logged at levels the table does not give them: {wrong}"
    section = _section("Logs")
    quiet = sorted(e for e in set(logged) - loud if f"`{e}`" not in section)
    assert not quiet, f"debug events the Logs section does not name: {quiet}"


def test_every_metric_is_in_the_metric_table_with_its_type_and_labels() -> None:
    """The metric table lists each metric ``/metrics`` exports, with its type and labels."""
    documented = {}
    for cells in _rows(_section("The HTTP endpoint and metrics")):
        names = re.findall(r"`(notifier_[a-z_]+)`", cells[0])
        if names:
            documented[names[0]] = (cells[1], set(re.findall(r"`([a-z_]+)`", cells[2])))
    exported = {}
    for metric in vars(Metrics()).values():
        if isinstance(metric, MetricWrapperBase):
            assert metric._type is not None
            exported[metric._name + SUFFIX[metric._type]] = (metric._type, set(metric._labelnames))
    assert documented == exported
