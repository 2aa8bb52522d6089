"""The command line's rough edges, as a user meets them: real processes, a real redis-server.

`--config` before the command, commands that need no Storm secret, replay and dlq usage
errors, confirmation, progress and the text output of tail and of the stdout sink.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from notifier.keys import ClusterKeys
from testkit.sink_support import make_events, publish

from .test_cli import Result, _env, notifier

if TYPE_CHECKING:
    from pathlib import Path

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOK = "https://hooks.example.com/services/T000/B000/XXXXSECRETXXXX"


def write_config(tmp_path: Path, redis_url: str, *, name: str = "notifier.yaml") -> Path:
    """A config whose Storm password and webhook secrets all come from unset variables."""
    path = tmp_path / name
    path.write_text(
        f"redis: {{url: '{redis_url}'}}\n"
        "clusters:\n"
        "  - name: eu-1\n"
        "    base_url: http://127.0.0.1:1\n"
        "    auth: {username: admin, password: '${STORM_PASSWORD}'}\n"
        "    poll_interval: 2s\n"
        "sinks:\n"
        "  - name: hooks\n"
        "    type: webhook\n"
        "    url: '${WEBHOOK_URL}'\n"
        "    secret: '${WEBHOOK_SECRET}'\n"
        "    retry: {schedule: [0s, 5s, 1d]}\n"
        "  - {name: out, type: stdout, format: text}\n"
        "logging: {format: json, level: warning}\n"
    )
    return path


async def in_pty(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> Result:
    """Run `python -m notifier ARGS` with a terminal as stdin (what is typed: ``stdin``)."""
    controller, terminal = pty.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "notifier",
            *args,
            stdin=terminal,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env or _env(),
        )
        os.write(controller, stdin)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        os.close(terminal)
        os.close(controller)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


async def test_config_before_the_command_is_used_and_the_later_one_wins(tmp_path: Path) -> None:
    """`notifier --config A cmd` uses A; `--config A cmd --config B` uses B."""
    first = write_config(tmp_path, "redis://127.0.0.1:1/0", name="a.yaml")
    second = tmp_path / "b.yaml"
    second.write_text(first.read_text().replace("name: eu-1", "name: us-2"))
    env = _env(STORM_PASSWORD="pw", WEBHOOK_URL=HOOK, WEBHOOK_SECRET=SECRET)
    result = await notifier("--config", str(first), "check-config", "--offline", env=env)
    assert result.status == 0, result.stderr
    assert "- name: eu-1" in result.stdout
    result = await notifier(
        "--config", str(first), "check-config", "--offline", "--config", str(second), env=env
    )
    assert result.status == 0, result.stderr
    assert "- name: us-2" in result.stdout
    assert "eu-1" not in result.stdout
    result = await notifier("--config", str(first), "dlq", "list", "--sink", "nope")
    assert result.status == 2
    assert result.stderr == "notifier: no sink named 'nope' (configured: hooks, out)\n"


async def test_check_config_shows_durations_as_written_and_urls_masked(tmp_path: Path) -> None:
    """Durations print as 2s or 1d, never 2.0; a webhook URL as scheme and host only."""
    config = write_config(tmp_path, "redis://127.0.0.1:1/0")
    env = _env(STORM_PASSWORD="pw", WEBHOOK_URL=HOOK, WEBHOOK_SECRET=SECRET)
    result = await notifier("check-config", "--offline", "--config", str(config), env=env)
    assert result.status == 0, result.stderr
    assert "  poll_interval: 2s\n" in result.stdout
    assert "  timeout: 10s\n" in result.stdout
    assert "    - 1d\n" in result.stdout
    assert "  url: https://hooks.example.com/***\n" in result.stdout
    assert "XXXXSECRETXXXX" not in result.stdout
    assert "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" not in result.stdout
    assert "password: '**********'" in result.stdout


async def test_commands_that_read_redis_only_need_no_storm_or_sink_secret(
    tmp_path: Path, redis_url: str
) -> None:
    """dlq list/purge and tail run with STORM_PASSWORD and the webhook secrets unset."""
    config = write_config(tmp_path, redis_url)
    result = await notifier("dlq", "list", "--sink", "hooks", "--config", str(config))
    assert (result.status, result.stdout) == (0, "")
    assert result.stderr == "no dead letters for sink hooks on cluster eu-1\n"
    result = await notifier("dlq", "purge", "--sink", "hooks", "--yes", "--config", str(config))
    assert (result.status, result.stdout) == (0, "purged 0 dead letters of sink hooks\n")
    result = await notifier("snapshot", "--config", str(config))
    assert result.status == 2
    assert "STORM_PASSWORD is not set" in result.stderr
    result = await notifier("dlq", "redrive", "--sink", "hooks", "--config", str(config))
    assert result.status == 2
    assert "sinks[0].url: environment variable WEBHOOK_URL is not set" in result.stderr


async def test_replay_from_later_than_to_is_a_usage_error(tmp_path: Path) -> None:
    """`replay --from` after `--to`: one line, exit 2, before anything is read."""
    config = write_config(tmp_path, "redis://127.0.0.1:1/0")
    result = await notifier(
        "replay", "--sink", "out", "--config", str(config),
        "--from", "2026-02-05T09:00:00Z", "--to", "2026-02-05T08:00:00Z",
    )  # fmt: skip
    assert result.status == 2
    assert result.stderr == (
        "notifier: replay: --from 2026-02-05T09:00:00Z is later than --to 2026-02-05T08:00:00Z\n"
    )


async def test_replay_prints_text_lines_and_a_summary(tmp_path: Path, redis_url: str) -> None:
    """A replay to a `format: text` stdout sink: one line per event, then a summary on stderr."""
    redis = Redis.from_url(redis_url)
    try:
        events = make_events(30, 5)
        await publish(redis, events)
    finally:
        await redis.aclose()
    config = write_config(tmp_path, redis_url)
    result = await notifier("replay", "--sink", "out", "--from", "0", "--config", str(config))
    assert result.status == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 30
    first = events[0]
    assert lines[0].split() == [
        "02:40:00.001", "eu-1", "viewer.connected", first["streamKey"], first["viewer"],
        first["country"], "40", "Bad",
    ]  # fmt: skip
    assert "\x1b[" not in result.stdout  # a pipe: no colour
    assert result.stderr.splitlines()[-1].startswith(
        "replay: 30 of 30 events delivered, 0 failed, in "
    )


async def test_dlq_purge_asks_on_a_terminal_and_needs_yes_elsewhere(
    tmp_path: Path, redis_url: str
) -> None:
    """purge without --before: a pipe needs --yes (exit 2); a terminal asks, and no means no."""
    config = write_config(tmp_path, redis_url)
    dlq = ClusterKeys("notifier", "eu-1").dlq("hooks")
    redis = Redis.from_url(redis_url)
    try:
        for n in range(3):
            await redis.xadd(dlq, {"reason": f"r{n}"})
        result = await notifier("dlq", "purge", "--sink", "hooks", "--config", str(config))
        assert result.status == 2
        assert result.stderr == (
            "notifier: dlq purge: deleting every dead letter needs --yes when not run on a"
            " terminal (or --before TIME|ID to delete the older ones only)\n"
        )
        args = ("dlq", "purge", "--sink", "hooks", "--config", str(config))
        declined = await in_pty(*args, stdin=b"n\n")
        assert declined.status == 1
        assert declined.stderr.startswith(
            "delete all 3 dead letters of sink hooks on cluster eu-1? [y/N] "
        )
        assert declined.stderr.endswith("notifier: dlq purge: not confirmed; nothing was deleted\n")
        assert await redis.xlen(dlq) == 3
        accepted = await in_pty(*args, stdin=b"y\n")
        assert (accepted.status, accepted.stdout) == (0, "purged 3 dead letters of sink hooks\n")
        assert await redis.exists(dlq) == 0
    finally:
        await redis.aclose()


async def test_tail_text_format_on_a_terminal_and_json_in_a_pipe(
    tmp_path: Path, redis_url: str
) -> None:
    """`tail`: JSON into a pipe, coloured text lines on a terminal, plain text with NO_COLOR."""
    redis = Redis.from_url(redis_url)
    try:
        events = make_events(4, 2)
        await publish(redis, events)
    finally:
        await redis.aclose()
    config = write_config(tmp_path, redis_url)
    lines = await _tail_lines(config, 4)
    assert [json.loads(line)["id"] for line in lines] == [e["id"] for e in events]
    text = await _tail_lines(config, 4, terminal=True)
    assert "\x1b[32mviewer.connected" in text[0]
    assert events[0]["viewer"] in text[0]
    plain = await _tail_lines(config, 1, "--format", "text", env=_env(NO_COLOR="1"))
    assert plain[0].startswith("02:40:00.001  eu-1  viewer.connected         live-")


async def _tail_lines(
    config: Path,
    count: int,
    *args: str,
    terminal: bool = False,
    env: dict[str, str] | None = None,
) -> list[str]:
    """The first ``count`` lines `notifier tail --from 0` prints (into a pipe or a terminal)."""
    reader, writer = pty.openpty() if terminal else os.pipe()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", "tail", "--from", "0", "--config", str(config), *args,
        stdout=writer, stderr=asyncio.subprocess.DEVNULL, env=env or _env(),
    )  # fmt: skip
    os.close(writer)
    try:
        return await asyncio.wait_for(asyncio.to_thread(_read_lines, reader, count), 30)
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0
        os.close(reader)


def _read_lines(fd: int, count: int) -> list[str]:
    buffer = b""
    while buffer.count(b"\n") < count:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # a terminal whose other end is closed
            break
        if not chunk:
            break
        buffer += chunk
    return buffer.decode().replace("\r\n", "\n").splitlines()[:count]
