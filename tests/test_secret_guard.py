"""The secret guard (``testkit.secrets``) can fail a test, names the secret without showing it,
and knows the secrets the settings of a test hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from testkit.secrets import KNOWN_SECRETS, SecretGuard, find_leaks, secrets_of
from testkit.sink_support import webhook

if TYPE_CHECKING:
    from pathlib import Path

    from testkit.reliability import Tally

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(60)

TOKEN = "guard-test-token-9f2c"


def test_find_leaks_names_the_secret_by_kind_never_by_value() -> None:
    """A token in a line of output is found; the label has its kind and length, not its value."""
    [secret] = secrets_of(TOKEN, "console token")
    leaks = find_leaks(f"2026-01-01 INFO request token={TOKEN} ok\n", [secret])
    assert len(leaks) == 1
    assert leaks[0].startswith(f"console token ({len(TOKEN)} characters, sha256 ")
    assert TOKEN not in leaks[0]
    assert find_leaks("nothing to see", [secret]) == []


def test_urls_count_by_password_and_webhook_secrets_by_key_too() -> None:
    """A Redis URL by its password only; an https URL with a path whole; whsec_ also bare."""
    redis_url = secrets_of("rediss://alice:s3cret-pw@127.0.0.1:6380/0")
    assert {s.value for s in redis_url} == {"s3cret-pw"}
    assert secrets_of("redis://127.0.0.1:6379/0") == []
    hook = secrets_of("https://hooks.slack.com/services/T0/B0/abcdef")
    assert [s.value for s in hook] == ["https://hooks.slack.com/services/T0/B0/abcdef"]
    whsec = KNOWN_SECRETS["WEBHOOK_SECRET"]
    assert {s.value for s in secrets_of(whsec)} == {whsec, whsec.removeprefix("whsec_")}
    assert secrets_of("admin") == []  # too short to track: it is a user name too


def test_settings_built_in_a_test_register_their_secrets(request: pytest.FixtureRequest) -> None:
    """A SecretStr validated in the test process (a webhook URL here) is tracked at once."""
    guard = request.config.pluginmanager.get_plugin("secret-guard")
    assert isinstance(guard, SecretGuard)
    url = "https://receiver.example/hook/registered-by-validation"
    webhook(url)
    assert url in guard.secrets


def test_log_files_under_tmp_path_are_scanned(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A child process's ``*.log`` under tmp_path that holds a secret is a leak."""
    guard = SecretGuard()
    guard.add(TOKEN, "console token")
    (tmp_path / "child").mkdir()
    (tmp_path / "child" / "replica.log").write_text(f"auth_token={TOKEN}\n")
    report = pytest.TestReport(request.node.nodeid, ("", 0, ""), {}, "passed", None, "teardown")
    assert [label.split(" (")[0] for label in guard.leaks(report, tmp_path)] == ["console token"]
    (tmp_path / "child" / "replica.log").write_text("auth_token=***\n")
    assert guard.leaks(report, tmp_path) == []


GUARDED_CONFTEST = """
from testkit import secrets

def pytest_configure(config):
    secrets.install(config)
"""

GUARDED_TESTS = f"""
import logging
import pytest
from pydantic import SecretStr

def test_prints_a_validated_secret():
    secret = SecretStr({TOKEN!r})
    print("token is", secret.get_secret_value())

def test_logs_a_known_secret():
    logging.getLogger("x").warning("secret=%s", {KNOWN_SECRETS["WEBHOOK_SECRET"]!r})

def test_reads_it_back_itself(capsys):
    print({TOKEN!r})
    assert capsys.readouterr().out.strip() == {TOKEN!r}

def test_writes_it_to_a_log_file(tmp_path):
    (tmp_path / "child.log").write_text({TOKEN!r})

def test_keeps_its_secrets():
    print("token is", SecretStr({TOKEN!r}))

@pytest.mark.shows_secrets
def test_shows_one_on_purpose():
    print({TOKEN!r})
"""


@pytest.mark.shows_secrets  # the inner run's report, echoed here, holds them
@pytest.mark.reliability(
    fault="A test leaks a secret",
    injected=(
        "a pytester suite whose tests print, log, write to a log file or read back a configured "
        "secret"
    ),
    checked=(
        "the suite-wide guard fails exactly the leaking tests, naming the secret's kind, never "
        "its value"
    ),
)
def test_the_guard_fails_the_tests_that_leak_and_only_those(
    pytester: pytest.Pytester, tally: Tally
) -> None:
    """In a suite of its own: stdout, a log record, readouterr and a log file each fail."""
    pytester.makeconftest(GUARDED_CONFTEST)
    pytester.makepyfile(test_leaky=GUARDED_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=6, errors=4)
    tally.tried = 4  # the four leaking tests of the inner suite (the outcome says so)
    output = result.stdout.str()
    for name in ("prints_a_validated_secret", "logs_a_known_secret", "reads_it_back_itself"):
        assert f"ERROR test_leaky.py::test_{name}" in output
    assert "ERROR test_leaky.py::test_writes_it_to_a_log_file" in output
    assert "secret guard: the test's output holds a SecretStr (21 characters" in output
    assert "testkit secret WEBHOOK_SECRET" in output
    assert "test_keeps_its_secrets ERROR" not in output
