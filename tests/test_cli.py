"""The command line as a user runs it: real processes, exit codes, stdout and stderr."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from notifier.simulator import Faults, PopulationSettings, SimulatorSettings, running_simulator

from .conftest import bare_env, free_port

if TYPE_CHECKING:
    from pathlib import Path

PASSWORD = "pa55-w0rd-XYZ"
TOKEN = "tok-SECRET-123"


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


def _env(**extra: str) -> dict[str, str]:
    return bare_env(**extra)


async def notifier(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Result:
    """Run `python -m notifier ARGS` and collect what it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notifier",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env if env is not None else _env(),
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


def write_config(tmp_path: Path, url: str, *, extra: str = "", redis: str | None = None) -> Path:
    path = tmp_path / "notifier.yaml"
    text = (
        "clusters:\n"
        "  - name: sim\n"
        f"    base_url: {url}\n"
        "    auth:\n"
        "      username: admin\n"
        "      password: ${SIM_PASSWORD}\n"
        "    page_size: 100\n"
        "sinks:\n"
        "  - name: hooks\n"
        "    type: webhook\n"
        f"    url: https://receiver.example/hook?token={TOKEN}\n"
        "    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
        "logging: {format: json, level: debug}\n"
    )
    if redis is not None:
        text += f"redis: {{url: '{redis}'}}\n"
    path.write_text(text + extra)
    return path


def assert_no_secrets(result: Result) -> None:
    for secret in (PASSWORD, TOKEN, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "receiver.example/hook"):
        assert secret not in result.stdout
        assert secret not in result.stderr


def sim_settings(viewers: int) -> SimulatorSettings:
    population = PopulationSettings(seed=11, viewers=viewers)
    return SimulatorSettings(population=population, username="admin", password=PASSWORD)


async def test_snapshot_returns_every_viewer_once_through_faults(tmp_path: Path) -> None:
    """5,000 viewers at 50 a page with token expiry, 5xx, 429 and malformed pages: all, once."""
    faults = Faults(seed=1, max_rows_per_page=50, retry_after=0.1, error_rate=0.03)
    faults.script(
        "expire-token",
        "500",
        "429",
        "truncated",
        "html-200",
        "503-html",
        "garbage",
        "expire-token",
        "502",
    )
    async with running_simulator(sim_settings(5000), faults) as sim:
        config = write_config(tmp_path, sim.url)
        result = await notifier(
            "snapshot", "--config", str(config), env=_env(SIM_PASSWORD=PASSWORD)
        )
        assert result.status == 0, result.stderr
        lines = result.stdout.splitlines()
        ids = [json.loads(line)["id"] for line in lines]
        assert len(ids) == 5000
        assert set(ids) == sim.population.ids()
        assert [json.loads(line) for line in lines[:50]] == [
            sim.population.get(i) for i in ids[:50]
        ]
        verdict = result.stderr.strip().splitlines()[-1]
        assert verdict.startswith("snapshot: sim: complete: 5000 viewers (100 pages")
        assert sim.stats.responses_by_status[401] >= 2
        assert sim.stats.responses_by_status[429] >= 1
        assert_no_secrets(result)


async def test_snapshot_of_an_unreachable_cluster_is_incomplete_and_exits_1(
    tmp_path: Path,
) -> None:
    """A poll that cannot complete prints the reason and exits 1."""
    config = write_config(tmp_path, f"http://127.0.0.1:{free_port()}", extra="", redis=None)
    text = config.read_text().replace("page_size: 100", "page_size: 100\n    poll_budget: 300ms")
    config.write_text(text)
    result = await notifier("snapshot", "--config", str(config), env=_env(SIM_PASSWORD=PASSWORD))
    assert result.status == 1
    assert result.stdout == ""
    verdict = result.stderr.strip().splitlines()[-1]
    assert verdict.startswith("snapshot: sim: INCOMPLETE: page 1: connection refused")
    assert "; no viewers printed (" in verdict
    assert_no_secrets(result)


async def test_snapshot_with_several_clusters_needs_a_choice(tmp_path: Path) -> None:
    """Two clusters and no --cluster: exit 2 and the names to choose from."""
    config = write_config(tmp_path, "http://127.0.0.1:1")
    text = config.read_text().replace(
        "sinks:", "  - name: other\n    base_url: http://127.0.0.1:2\n    auth: {token: t}\nsinks:"
    )
    config.write_text(text)
    result = await notifier("snapshot", "--config", str(config), env=_env(SIM_PASSWORD="x"))
    assert result.status == 2
    assert result.stderr == (
        "notifier: several clusters are configured (sim, other): pick one with --cluster\n"
    )
    result = await notifier(
        "snapshot", "--config", str(config), "--cluster", "nope", env=_env(SIM_PASSWORD="x")
    )
    assert result.status == 2
    assert result.stderr == "notifier: no cluster named 'nope' (configured: sim, other)\n"


@pytest.mark.parametrize("command", ["snapshot", "check-config"])
async def test_a_broken_config_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, command: str
) -> None:
    """Any command given a bad config prints one line naming file and key, and exits 2."""
    config = write_config(tmp_path, "http://127.0.0.1:1")
    config.write_text(config.read_text().replace("page_size: 100", "timeout: x"))
    result = await notifier(command, "--config", str(config), env=_env(SIM_PASSWORD=PASSWORD))
    assert result.status == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"notifier: {config}: ")
    assert "clusters[0].timeout: expected a duration" in lines[0]
    assert_no_secrets(result)


async def test_config_comes_from_notifier_config_and_env_overrides(tmp_path: Path) -> None:
    """NOTIFIER_CONFIG picks the file; NOTIFIER_* overrides show up in check-config."""
    config = write_config(tmp_path, "http://127.0.0.1:1")
    env = _env(
        SIM_PASSWORD=PASSWORD,
        NOTIFIER_CONFIG=str(config),
        NOTIFIER_CLUSTERS__SIM__POLL_INTERVAL="750ms",
    )
    result = await notifier("check-config", "--offline", env=env)
    assert result.status == 0, result.stderr
    assert "poll_interval: 750ms" in result.stdout
    assert "**********" in result.stdout
    assert_no_secrets(result)


async def test_a_missing_default_config_is_a_usage_error(tmp_path: Path) -> None:
    """With no file anywhere, the message says where it looked."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notifier",
        "snapshot",
        cwd=tmp_path,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert stderr.decode() == (
        "notifier: config/notifier.yaml: config file not found (use --config or NOTIFIER_CONFIG)\n"
    )


async def test_check_config_reaches_the_cluster_and_redis(tmp_path: Path, redis_url: str) -> None:
    """check-config logs in, counts viewers, pings Redis, and prints secrets masked."""
    async with running_simulator(sim_settings(42)) as sim:
        redis_with_password = redis_url.replace("redis://", "redis://default:@")
        config = write_config(tmp_path, sim.url, redis=redis_with_password)
        result = await notifier(
            "check-config", "--config", str(config), env=_env(SIM_PASSWORD=PASSWORD)
        )
        assert result.status == 0, result.stderr
        assert "cluster sim: ok (login): 42 viewers" in result.stdout
        assert "redis redis://default:***@127.0.0.1:" in result.stdout
        assert "ok (redis 7." in result.stdout
        assert sim.stats.logins == 1
        assert sim.stats.logouts == 1
        assert_no_secrets(result)


async def test_check_config_fails_with_one_line_when_a_dependency_is_down(
    tmp_path: Path,
) -> None:
    """An unreachable Redis and a refused login are reported, and the exit status is 1."""
    async with running_simulator(sim_settings(5)) as sim:
        config = write_config(tmp_path, sim.url, redis=f"redis://127.0.0.1:{free_port()}/0")
        result = await notifier(
            "check-config", "--config", str(config), env=_env(SIM_PASSWORD="wrong-password")
        )
    assert result.status == 1
    assert "cluster sim: FAILED (login): login failed with HTTP 401" in result.stdout
    assert "redis redis://127.0.0.1:" in result.stdout
    assert result.stderr.splitlines()[-1] == "notifier: check-config: 2 of 2 dependencies failed"
    assert "wrong-password" not in result.stdout + result.stderr


async def test_usage_errors_exit_2_with_one_line() -> None:
    """An unknown command or option is one line on stderr and exit status 2."""
    result = await notifier("frobnicate")
    assert result.status == 2
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("notifier: argument COMMAND: invalid choice: 'frobnicate'")
    result = await notifier("snapshot", "--clusterr", "x")
    assert result.status == 2
    assert len(result.stderr.splitlines()) == 1


async def test_version() -> None:
    """--version prints the distribution and version."""
    result = await notifier("--version")
    assert (result.status, result.stdout.strip()) == (0, "storm-notifier 0.1.0")


async def test_simulate_serves_until_sigterm(tmp_path: Path) -> None:
    """`notifier simulate --port 0` says where it listens, serves snapshots, stops on SIGTERM."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notifier",
        "simulate",
        "--port",
        "0",
        "--viewers",
        "300",
        "--max-rows-per-page",
        "40",
        "--password",
        PASSWORD,
        "--seed",
        "4",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    assert process.stderr is not None
    try:
        url = None
        while url is None:
            line = await asyncio.wait_for(process.stderr.readline(), 30)
            assert line, "simulate exited before listening"
            event = json.loads(line)
            if event.get("event") == "simulator.listening":
                url = event["url"]
        config = write_config(tmp_path, url)
        result = await notifier(
            "snapshot", "--config", str(config), env=_env(SIM_PASSWORD=PASSWORD)
        )
        assert result.status == 0, result.stderr
        assert len(result.stdout.splitlines()) >= 250
        process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stderr.read(), 30)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert b"simulator.stopped" in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
