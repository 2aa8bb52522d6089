"""Real redis-server processes for tests: one server, or a cluster of three masters (with
replicas if asked).

Every process binds 127.0.0.1 on a port picked here (never the shared Redis on 6379), keeps
its data, log and output under a directory the caller owns (a pytest ``tmp_path``), and is
gone after ``stop()`` or the end of its ``with`` block, also when start-up fails half-way.

Errors::

    RuntimeError
     └── RedisProcessError   a server or redis-cli did not do what it was asked;
                             the message ends with the tail of its log
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from typing import IO, TYPE_CHECKING, Self

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from types import TracebackType

__all__ = [
    "CLUSTER_BUS_OFFSET",
    "RedisCluster3",
    "RedisProcessError",
    "RedisServer",
    "free_cluster_port",
    "free_port",
]

HOST = "127.0.0.1"
CLUSTER_BUS_OFFSET = 10000
"""Redis Cluster listens for its node-to-node bus on the client port + 10000."""
CLUSTER_SLOTS = 16384
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
_POLL_INTERVAL = 0.01
_PORT_ATTEMPTS = 3
_LOG_TAIL_LINES = 20

# Both a cluster port and its bus port stay below Linux's ephemeral range (32768-60999), so
# neither a port-0 bind elsewhere nor an outgoing connection takes them between our check and
# redis-server's own bind.
_CLUSTER_PORTS = range(10000, 22000)


class RedisProcessError(RuntimeError):
    """A redis-server or redis-cli did not do what it was asked; the message ends with its log."""


def _binary(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not shutil.which(path):
        raise RedisProcessError(f"{name} is not installed (apt-get install redis-server)")
    return path


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too."""
    for _ in range(1000):
        port = random.choice(_CLUSTER_PORTS)
        if _is_free(port) and _is_free(port + CLUSTER_BUS_OFFSET):
            return port
    raise RedisProcessError(f"no free port pair (port, port + 10000) in {_CLUSTER_PORTS}")


def _tail(*paths: Path) -> str:
    lines: list[str] = []
    for path in paths:
        if path.exists():
            lines += path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    return "\n".join(lines) or "(no output)"


def _probe_client(port: int, timeout: float = 2.0) -> redis.Redis:
    """A client that fails fast: readiness loops do their own polling."""
    return redis.Redis(
        host=HOST,
        port=port,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


class RedisServer:
    """One redis-server process on 127.0.0.1:<port>, data dir under a tmp path."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        cluster: bool = False,
    ) -> None:
        """``appendfsync``: with ``appendonly``, when the AOF is fsynced (``always``: before
        every reply, so a SIGKILL loses nothing Redis acknowledged)."""
        self.directory = directory
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.cluster = cluster
        self._port_chosen_by_caller = port is not None
        self._started_once = False
        if port is None:
            port = free_cluster_port() if cluster else free_port()
        self.port: int = port
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        """The server's log file (``--logfile``)."""
        return self.directory / "redis.log"

    @property
    def output_path(self) -> Path:
        """stdout and stderr of the process: command-line errors land here, not in the log."""
        return self.directory / "redis.out"

    @property
    def running(self) -> bool:
        """Whether the process has been started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def command_line(self) -> list[str]:
        """The argv this server runs with."""
        argv = [
            _binary("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
            "--appendonly",
            "yes" if self.appendonly else "no",
        ]
        if self.appendonly:
            argv += ["--appendfsync", self.appendfsync]
        else:
            argv += ["--save", ""]
        if self.cluster:
            argv += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.directory / "nodes.conf"),
                "--cluster-node-timeout",
                "2000",
            ]
        return argv

    def start(self) -> None:
        """Start the process and return once it answers; on failure nothing is left running.

        A port picked here can be taken by someone else before redis-server binds it; then the
        first start retries on a fresh port. After the first start the port never changes.
        """
        if self.running:
            raise RedisProcessError(f"redis-server on port {self.port} is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._spawn()
            try:
                self._wait_until_ready()
            except BaseException as error:
                self.kill()
                may_move = not (self._port_chosen_by_caller or self._started_once)
                clash = isinstance(error, RedisProcessError) and "already in use" in str(error)
                if not (may_move and clash) or attempt == _PORT_ATTEMPTS:
                    raise
                self.port = free_cluster_port() if self.cluster else free_port()
            else:
                self._started_once = True
                return

    def stop(self) -> None:
        """SIGTERM and wait; idempotent. Appendonly data is flushed and survives ``restart()``."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL and wait: a crash, nothing is flushed on the way out; idempotent."""
        self._end(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: the server neither answers nor refuses until ``resume()``."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stop if running, then start on the same port with the same data directory."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {HOST}:{self.port} {state} dir={self.directory}>"

    def _spawn(self) -> None:
        self._output = self.output_path.open("ab")
        try:
            self._process = subprocess.Popen(
                self.command_line(),
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            self._close_output()
            raise

    def _wait_until_ready(self) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + START_TIMEOUT
        # A short timeout: a foreign listener on the port may accept and never answer.
        with _probe_client(self.port, timeout=0.25) as client:
            while True:
                if process.poll() is not None:
                    raise RedisProcessError(
                        f"redis-server on port {self.port} exited with {process.returncode}:\n"
                        + _tail(self.output_path, self.log_path)
                    )
                try:
                    # Whoever answers must be our process, not another server on the port;
                    # INFO answers while the data is loading, PING waits for it.
                    if client.info("server").get("process_id") == process.pid and client.ping():
                        return
                except (RedisConnectionError, RedisTimeoutError):  # also BusyLoadingError
                    pass
                if time.monotonic() > deadline:
                    raise RedisProcessError(
                        f"redis-server on port {self.port} did not answer within "
                        f"{START_TIMEOUT:g} s:\n" + _tail(self.output_path, self.log_path)
                    )
                time.sleep(_POLL_INTERVAL)  # polling for readiness against a deadline

    def _end(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None:
                process.send_signal(sig)
                process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise RedisProcessError(
                f"redis-server on port {self.port} ignored {sig.name} for {STOP_TIMEOUT:g} s "
                "and was killed:\n" + _tail(self.log_path)
            ) from None
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            self._process = None
            self._close_output()

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None


class RedisCluster3:
    """Three masters formed with `redis-cli --cluster create`, with ``replicas`` replicas each
    (none by default)."""

    def __init__(self, directory: Path, *, replicas: int = 0) -> None:
        self.directory = directory
        self.replicas = replicas
        self.nodes: list[RedisServer] = self._nodes(directory, 3 * (1 + replicas))

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<first port>/0``: what ``RedisCluster.from_url`` takes."""
        return self.nodes[0].url

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node."""
        return [(HOST, node.port) for node in self.nodes]

    def start(self) -> None:
        """Start the nodes, form the cluster, and wait until every node sees all slots served.

        On failure every node is stopped again before the error propagates.
        """
        try:
            for node in self.nodes:
                node.start()
            self._create()
            self._wait_until_ok()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node (all of them, even if one fails to stop); idempotent."""
        errors: list[RedisProcessError] = []
        for node in self.nodes:
            try:
                node.stop()
            except RedisProcessError as error:
                errors.append(error)
        if errors:
            raise errors[0]

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        ports = ",".join(str(node.port) for node in self.nodes)
        return f"<RedisCluster3 {HOST}:{ports}>"

    def _replicated(self) -> bool:
        """Every master has its replicas in the slot map (they appear once they follow it)."""
        if not self.replicas:
            return True
        with _probe_client(self.nodes[0].port) as client:
            shards = client.execute_command("CLUSTER", "SLOTS")
        return all(len(shard) - 3 >= self.replicas for shard in shards)

    def node_serving(self, key: str) -> tuple[RedisServer, list[RedisServer]]:
        """The master serving ``key``'s slot now, and its replicas."""
        with _probe_client(self.nodes[0].port) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            shards = client.execute_command("CLUSTER", "SLOTS")
        by_port = {node.port: node for node in self.nodes}
        for start, end, master, *replicas in shards:
            if int(start) <= slot <= int(end):
                return by_port[int(master[1])], [by_port[int(r[1])] for r in replicas]
        raise RedisProcessError(f"no node serves slot {slot} of {key!r}")

    @staticmethod
    def _nodes(directory: Path, count: int) -> list[RedisServer]:
        """``count`` nodes whose ports (client and bus) are all different."""
        while True:
            nodes = [RedisServer(directory / f"node-{i}", cluster=True) for i in range(count)]
            ports = {port for node in nodes for port in (node.port, node.port + CLUSTER_BUS_OFFSET)}
            if len(ports) == 2 * count:
                return nodes

    def _create(self) -> None:
        addresses = [f"{host}:{port}" for host, port in self.startup_nodes]
        argv = [_binary("redis-cli"), "--cluster", "create", *addresses]
        argv += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise RedisProcessError(f"{' '.join(argv)} did not finish within 30 s") from error
        if result.returncode != 0:
            output = (result.stdout + result.stderr).splitlines()[-_LOG_TAIL_LINES:]
            raise RedisProcessError(
                f"{' '.join(argv)} exited with {result.returncode}:\n" + "\n".join(output)
            )

    def _wait_until_ok(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last: dict[int, str] = {}
        while True:
            for node in self.nodes:
                last[node.port] = _cluster_info(node.port)
            if all(_is_ok(info, len(self.nodes)) for info in last.values()) and self._replicated():
                return
            if time.monotonic() > deadline:
                report = "\n".join(f"{port}: {info}" for port, info in last.items())
                raise RedisProcessError(
                    f"cluster {self!r} not ok within {START_TIMEOUT:g} s:\n{report}"
                )
            time.sleep(_POLL_INTERVAL * 5)  # polling for cluster state against a deadline


def _cluster_info(port: int) -> str:
    with _probe_client(port) as client:
        reply = client.execute_command("CLUSTER", "INFO")
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return " ".join(_interesting(text))


def _interesting(info: str) -> Iterator[str]:
    for line in info.splitlines():
        if line.startswith(("cluster_state:", "cluster_slots_", "cluster_known_nodes:")):
            yield line.strip()


def _is_ok(info: str, nodes: int) -> bool:
    fields = dict(item.split(":", 1) for item in info.split())
    return (
        fields.get("cluster_state") == "ok"
        and fields.get("cluster_slots_assigned") == str(CLUSTER_SLOTS)
        and fields.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
        and fields.get("cluster_known_nodes") == str(nodes)
    )
