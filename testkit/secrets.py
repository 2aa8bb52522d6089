"""The secret guard: a test fails when a configured secret shows up in what it printed or logged.

What counts as a secret: every ``SecretStr`` built while the suite runs (settings validated in
the test process: Storm passwords, tokens and API keys, webhook secrets and URLs, Slack URLs and
tokens, the Redis URL's password, the console token), plus ``KNOWN_SECRETS``, the secrets tests
write into config files for child processes. Values shorter than ``MIN_LENGTH`` are not
tracked (``admin`` is also a user name); a Redis URL counts by its password only, and a
webhook secret also by its base64 key without ``whsec_``.

Where it looks, after each test: pytest's captured stdout, stderr and log sections (every
phase), what the test read with ``capsys``/``capfd`` ``readouterr()``, what structlog's
``capture_logs`` captured, and the ``*.log`` and ``*.out`` files under the test's ``tmp_path``.

A leak turns the test's teardown into an error naming the secret by kind, length and a short
SHA-256 fingerprint, never by value. A test that prints a secret on purpose (``config show
--reveal``) says so with ``@pytest.mark.shows_secrets``. ``install`` wires it up; call it from
``conftest.py``'s ``pytest_configure``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import pytest
import structlog.testing
from pydantic import SecretStr

if TYPE_CHECKING:
    from collections.abc import Generator, Iterable, Iterator, Mapping
    from pathlib import Path

__all__ = [
    "KNOWN_SECRETS",
    "MIN_LENGTH",
    "Secret",
    "SecretGuard",
    "find_leaks",
    "install",
    "secrets_of",
]

MIN_LENGTH = 6
"""Shorter values are not tracked: they turn up by chance (``admin``, ``pw``, ``t``)."""

KNOWN_SECRETS: Mapping[str, str] = {
    "WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "SECOND_WEBHOOK_SECRET": "whsec_c2Vjb25kLXNlY3JldC1rZXktMzItYnl0ZXMh",
    "STORM_STATIC_TOKEN": "tok-static",
    "STORM_SIM_TOKEN": "tok-sim",
    "STORM_PASSWORD": "pa55-w0rd",
}
"""Secrets the tests write into config files for ``python -m notifier`` children."""

LOG_GLOBS = ("*.log", "*.out")
MAX_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Secret:
    """A value that must not appear, and how to name it without showing it."""

    value: str
    kind: str

    @property
    def label(self) -> str:
        """``webhook secret (38 characters, sha256 1a2b3c4d)``: identifies, reveals nothing."""
        digest = hashlib.sha256(self.value.encode()).hexdigest()[:8]
        return f"{self.kind} ({len(self.value)} characters, sha256 {digest})"


def secrets_of(value: str, kind: str | None = None) -> list[Secret]:
    """The parts of a configured value that must not leak (none if too short); ``kind`` names
    them, else their shape does."""
    found: list[Secret] = []
    if "://" in value:
        parts = urlsplit(value)
        if parts.password:
            name = kind or "password in a URL"
            found += [Secret(parts.password, name), Secret(unquote(parts.password), name)]
        if parts.scheme in ("http", "https") and parts.path not in ("", "/"):
            found.append(Secret(value, kind or "URL (it may carry a token)"))
    elif value.startswith("whsec_"):
        name = kind or "webhook secret"
        found += [Secret(value, name), Secret(value[6:], f"{name} (its key)")]
    else:
        found.append(Secret(value, kind or "a SecretStr"))
    return [s for s in found if len(s.value) >= MIN_LENGTH]


def find_leaks(text: str, secrets: Iterable[Secret]) -> list[str]:
    """Labels of the secrets that occur in ``text``, sorted, each once."""
    return sorted({s.label for s in secrets if s.value in text})


class SecretGuard:
    """Collects secrets and captured text; checks a test's report at teardown."""

    def __init__(self) -> None:
        self.secrets: dict[str, Secret] = {}
        self.seen: list[str] = []  # read by the test itself: readouterr(), capture_logs()
        for name, value in KNOWN_SECRETS.items():
            self.add(value, f"testkit secret {name}")

    def add(self, value: object, kind: str | None = None) -> None:
        """Track ``value`` (a str; anything else is ignored)."""
        if isinstance(value, str) and len(value) >= MIN_LENGTH:
            for secret in secrets_of(value, kind):
                self.secrets.setdefault(secret.value, secret)

    def texts(self, report: pytest.TestReport, tmp_path: Path | None) -> Iterator[str]:
        """Everything the test printed, logged or left in log files."""
        yield from self.seen
        for _, content in report.sections:
            yield content
        if tmp_path is not None and tmp_path.is_dir():
            for pattern in LOG_GLOBS:
                for path in tmp_path.rglob(pattern):
                    try:
                        with path.open("rb") as file:
                            yield file.read(MAX_FILE_BYTES).decode("utf-8", "replace")
                    except OSError:  # a file removed under our feet: nothing to read
                        continue

    def leaks(self, report: pytest.TestReport, tmp_path: Path | None) -> list[str]:
        """Labels of the secrets found in the test's output."""
        secrets = list(self.secrets.values())
        found: set[str] = set()
        for text in self.texts(report, tmp_path):
            found.update(find_leaks(text, secrets))
        return sorted(found)

    # --- pytest hooks ---------------------------------------------------------------------------

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """A fresh record of what the test reads itself."""
        del item
        self.seen.clear()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        """At teardown, a leak makes the test an error that names the secret."""
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        if call.when != "teardown" or item.get_closest_marker("shows_secrets") is not None:
            return
        tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
        leaked = self.leaks(report, tmp_path)
        if leaked:
            report.outcome = "failed"
            report.longrepr = "secret guard: the test's output holds " + "; ".join(leaked)


def install(config: pytest.Config) -> SecretGuard:
    """Register the guard, and record every ``SecretStr`` built from now on."""
    guard = SecretGuard()
    config.addinivalue_line(
        "markers", "shows_secrets: the test prints configured secrets on purpose (no guard)"
    )
    original_init = SecretStr.__init__

    def recording_init(self: SecretStr, secret_value: str) -> None:
        original_init(self, secret_value)
        guard.add(secret_value)

    SecretStr.__init__ = recording_init  # type: ignore[method-assign,assignment]

    original_read = pytest.CaptureFixture.readouterr

    def recording_read(self: pytest.CaptureFixture[Any]) -> Any:
        result = original_read(self)
        guard.seen.extend(str(part) for part in result)
        return result

    pytest.CaptureFixture.readouterr = recording_read  # type: ignore[method-assign]

    original_capture = structlog.testing.LogCapture.__call__

    def recording_capture(
        self: structlog.testing.LogCapture, logger: Any, method_name: str, event_dict: Any
    ) -> Any:
        guard.seen.append(repr(event_dict))
        return original_capture(self, logger, method_name, event_dict)

    structlog.testing.LogCapture.__call__ = recording_capture  # type: ignore[method-assign,assignment]
    config.pluginmanager.register(guard, "secret-guard")
    return guard
