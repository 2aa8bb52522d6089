"""A fleet of `notifier run` replicas as real processes, the leases they hold, and what the
webhook receivers got from them (tests/test_scaleout_processes.py).

The leases are read straight from Redis (``owner:token`` values, the owner being
``host-pid-random``), so a share is checked against the process ids the test started, not
against anything the service reports about itself.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from notifier.keys import ClusterKeys
from notifier.sinks.partition import partitions

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
    from pathlib import Path

    from notifier.redis_client import AnyRedis
    from testkit.detection_support import Lockstep
    from testkit.receivers import WebhookReceiver

__all__ = [
    "LEASE",
    "PREFIX",
    "SECRET",
    "Hook",
    "Replica",
    "arrivals",
    "assert_delivered",
    "freeze",
    "lease_keys",
    "shares",
    "undelivered",
    "until",
    "write_config",
]

LEASE = 1.0
"""The leader lease (seconds) of every replica: a fleet round every third of it."""
PREFIX = "notifier"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass(frozen=True, slots=True)
class Hook:
    """A webhook sink of the configuration: its name, its receiver's URL, its partitions."""

    name: str
    url: str
    partitions: int = 1


def write_config(
    path: Path,
    *,
    redis_url: str,
    clusters: Mapping[str, str],
    hooks: Sequence[Hook],
    cluster: bool = False,
) -> Path:
    """A role-all configuration: ``clusters`` (name -> simulator URL) polled every 200 ms,
    ``hooks`` delivered with a short timeout, the endpoint on a free port (replicas share a
    host), JSON logs."""
    lines = [
        f"redis: {{url: '{redis_url}', cluster: {str(cluster).lower()}}}",
        "clusters:",
        *(
            f"  - {{name: {name}, base_url: '{url}', auth: {{token: tok-sim}},"
            " poll_interval: 200ms, poll_budget: 10s, timeout: 2s}"
            for name, url in clusters.items()
        ),
        f"detection: {{leader_lease: {LEASE}s}}",
        "sinks:",
        *(
            f"  - {{name: {hook.name}, type: webhook, url: '{hook.url}', secret: {SECRET},"
            f" partitions: {hook.partitions}, timeout: 1s, batch_wait: 100ms,"
            " retry: {schedule: [0s, 100ms, 200ms]}}"
            for hook in hooks
        ),
        "server: {listen: '127.0.0.1:0'}",
        "logging: {format: json, level: info}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def lease_keys(clusters: Iterable[str], hooks: Sequence[Hook]) -> dict[str, list[str]]:
    """The Redis keys of every lease, per fleet kind (``pollers``, ``sinks``)."""
    out: dict[str, list[str]] = {"pollers": [], "sinks": []}
    for name in clusters:
        keys = ClusterKeys(PREFIX, name)
        out["pollers"].append(keys.lease)
        for hook in hooks:
            out["sinks"] += [
                part.lease_key(keys) for part in partitions(hook.name, hook.partitions)
            ]
    return out


class Replica:
    """One `notifier run` process (``role`` all by default), its stderr (JSON log lines) in a
    file of its own."""

    def __init__(self, config: Path, log: Path, *, role: str = "all") -> None:
        self.config = config
        self.log = log
        self.role = role
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> Replica:
        with self.log.open("ab") as err:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "notifier",
                "run",
                "--role",
                self.role,
                "--config",
                str(self.config),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def owns(self, owner: str) -> bool:
        """True if ``owner`` (``host-pid-random``) is this process."""
        return f"-{self.pid}-" in owner

    async def kill(self) -> None:
        """SIGKILL: no hand-over, no release; its leases and heartbeat run out by themselves."""
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM and the exit status: the graceful stop."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)

    async def ensure_dead(self) -> None:
        """Whatever happened in the test, leave no process behind."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def logged(self, event: str) -> list[dict[str, Any]]:
        """This process's log entries named ``event``."""
        if not self.log.exists():
            return []
        entries = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [entry for entry in entries if entry.get("event") == event]


async def shares(
    redis: AnyRedis,
    kinds: Mapping[str, Sequence[str]],
    live: Sequence[Replica],
    *,
    newcomer: Replica | None = None,
) -> str | None:
    """None if every lease of every kind is held by one of ``live``, none holds more than
    ceil(L / N) of a kind, and ``newcomer`` holds at least one of each; else what is not so."""
    for kind, keys in kinds.items():
        held: Counter[int] = Counter()
        for key in keys:  # one GET each: on a Redis Cluster the keys live in different slots
            value = await redis.get(key)
            if value is None:
                return f"{kind}: {key} is free"
            owner = (value.decode() if isinstance(value, bytes) else str(value)).rsplit(":", 1)[0]
            replica = next((r for r in live if r.owns(owner)), None)
            if replica is None:
                return f"{kind}: {key} is held by {owner}, not a live replica"
            held[replica.pid] += 1
        most = math.ceil(len(keys) / len(live))
        if any(count > most for count in held.values()):
            return f"{kind}: {dict(held)} (pid: leases), more than {most} for one"
        if newcomer is not None and held[newcomer.pid] == 0:
            return f"{kind}: the newcomer {newcomer.pid} holds none of {dict(held)}"
    return None


async def until(
    check: Callable[[], Awaitable[str | None]], *, timeout: float, steady: float = 0.0
) -> float:
    """Seconds until ``check`` says None (nothing wrong) and keeps saying it for ``steady``
    seconds (checked every 50 ms); AssertionError with its last complaint after ``timeout``."""
    started = time.monotonic()
    good_since: float | None = None
    complaint: str | None = "never checked"
    while True:
        now = time.monotonic()
        complaint = await check()
        if complaint is None:
            good_since = now if good_since is None else good_since
            if now - good_since >= steady:
                return good_since - started
        else:
            good_since = None
        assert now - started < timeout, f"after {timeout}s: {complaint}"
        await asyncio.sleep(0.05)  # the pace of the checks, not a synchronisation


def _server_errors(sim: Lockstep) -> int:
    return sum(n for status, n in sim.simulator.stats.responses_by_status.items() if status >= 500)


async def freeze(sims: Sequence[Lockstep], timeout: float = 30) -> None:
    """Storm answers every viewer list with a 5xx from now on, so no poll can complete and
    nothing more is committed (an incomplete poll changes nothing, and the lockstep's ground
    truth stays exact); returns once every cluster's leader has met one: its last commit is
    done, and the streams are final."""
    before = [_server_errors(sim) for sim in sims]
    for sim in sims:
        sim.simulator.faults.error_rate = 1.0

    async def refused() -> str | None:
        waiting = [i for i, sim in enumerate(sims) if _server_errors(sim) <= before[i]]
        return f"clusters {waiting} not refused yet" if waiting else None

    await until(refused, timeout=timeout)


def _order_key(cluster: str, event: dict[str, Any]) -> tuple[str, str]:
    """What order holds per: a viewer, or a stream (``applicationId/streamKey``), per cluster."""
    if event["type"].startswith("stream."):
        stream = event["data"]["stream"]
        return cluster, f"{stream.get('applicationId') or ''}/{stream['streamKey']}"
    return cluster, event["subject"]


def arrivals(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    """Every event a receiver accepted, batches unpacked, in arrival order."""
    out: list[dict[str, Any]] = []
    for item in receiver.received:
        out += item.json if isinstance(item.json, list) else [item.json]
    return out


def undelivered(
    receivers: Sequence[WebhookReceiver], streams: Mapping[str, list[dict[str, Any]]]
) -> str | None:
    """None once every receiver has had every event of ``streams``; else how many it lacks."""
    emitted = {event["id"] for events in streams.values() for event in events}
    lacking = [len(emitted - {e["id"] for e in arrivals(r)}) for r in receivers]
    return f"{lacking} of {len(emitted)} events not delivered yet" if any(lacking) else None


def assert_delivered(
    receiver: WebhookReceiver, streams: Mapping[str, list[dict[str, Any]]], *, once: bool = False
) -> None:
    """Every event of every cluster's stream reached the receiver (batches unpacked), nothing
    else did, and the first receipts keep each viewer's and each stream's stream order; with
    ``once``, no event arrived twice."""
    arrived = arrivals(receiver)
    first: dict[str, dict[str, Any]] = {}
    for event in arrived:
        first.setdefault(event["id"], event)
    emitted = {e["id"]: (cluster, e) for cluster, events in streams.items() for e in events}
    assert set(first) == set(emitted), (
        f"{len(set(emitted) - set(first))} events never arrived, "
        f"{len(set(first) - set(emitted))} arrived that were not emitted"
    )
    if once:
        twice = {i: n for i, n in Counter(e["id"] for e in arrived).items() if n > 1}
        assert not twice, f"{len(twice)} events arrived more than once: {twice}"
    expected: dict[tuple[str, str], list[int]] = {}
    for cluster, events in streams.items():
        for event in events:
            expected.setdefault(_order_key(cluster, event), []).append(event["sequence"])
    got: dict[tuple[str, str], list[int]] = {}
    for event_id, event in first.items():
        cluster = emitted[event_id][0]
        got.setdefault(_order_key(cluster, event), []).append(event["sequence"])
    assert got == expected
