"""Real Redis topologies for tests: a 3-master Redis Cluster, and master + replica + Sentinel.

Every process binds 127.0.0.1 on a free port, keeps its files in the test's directory and
persists nothing. Waits are polls with a deadline.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.support.processes import free_port
from tests.support.redis_server import RedisServer, raw_command

READY_TIMEOUT_S = 30.0


CLUSTER_BUS_OFFSET = 10_000
"""A cluster node also listens on its port + 10000 (the cluster bus), so its port is at
most 55535: the kernel's ephemeral ports are too high."""


def cluster_port() -> int:
    """A port below the ephemeral range that is free, and free again 10000 above."""
    while True:
        port = random.randrange(20_000, 30_000)
        try:
            for candidate in (port, port + CLUSTER_BUS_OFFSET):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def _redis_cli() -> str:
    return shutil.which("redis-cli") or "/usr/bin/redis-cli"


class RedisCluster:
    """Three cluster-enabled masters, no replicas, every slot assigned."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.nodes: list[RedisServer] = []
        for i in range(masters):
            node_dir = workdir / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            port = cluster_port()
            extra = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "1000",
                "--cluster-require-full-coverage", "no",
            ]  # fmt: skip
            self.nodes.append(RedisServer(node_dir, port, extra_args=extra))

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [_redis_cli(), "--cluster", "create", *self.addresses, "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        self.wait_ok()

    def ensure_running(self) -> None:
        """Restart any stopped node (it keeps its identity and slots in its config file)."""
        restarted = False
        for node in self.nodes:
            if not node.running:
                node.start()
                restarted = True
        if restarted:
            self.wait_ok()

    def wait_ok(self) -> None:
        """Until every running node reports the cluster ok, every slot served."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            states = [node.command("CLUSTER", "INFO") for node in self.nodes if node.running]
            healthy = [b"cluster_state:ok", b"cluster_slots_ok:16384"]
            if states and all(part in state for state in states for part in healthy):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach state ok")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinelSet:
    """A master, one replica of it, and one Sentinel watching them as `master_name`."""

    def __init__(self, workdir: Path, master_name: str = "mymaster") -> None:
        self.master_name = master_name
        for sub in ("master", "replica", "sentinel"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        self.master = RedisServer(workdir / "master")
        self.replica = RedisServer(
            workdir / "replica",
            extra_args=["--replicaof", "127.0.0.1", str(self.master.port)],
        )
        self.sentinel_port = free_port()
        self._sentinel_dir = workdir / "sentinel"
        self._sentinel: subprocess.Popen[bytes] | None = None

    @property
    def sentinels(self) -> list[str]:
        return [f"127.0.0.1:{self.sentinel_port}"]

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        config = self._sentinel_dir / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"dir {self._sentinel_dir}\n"
            f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.master_name} 1000\n"
            f"sentinel failover-timeout {self.master_name} 2000\n"
            f"sentinel parallel-syncs {self.master_name} 1\n"
        )
        executable = shutil.which("redis-sentinel") or shutil.which("redis-server")
        argv = [executable or "/usr/bin/redis-server", str(config)]
        if not (executable or "").endswith("redis-sentinel"):
            argv.append("--sentinel")
        self._sentinel = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.wait_replica_synced()
        self.wait_master_known(self.master.port)

    def sentinel_command(self, *args: str) -> bytes:
        return raw_command(self.sentinel_port, *args)

    def named_master_port(self) -> int | None:
        """The master's port as the Sentinel names it now."""
        reply = self.sentinel_command("SENTINEL", "get-master-addr-by-name", self.master_name)
        lines = reply.split(b"\r\n")
        try:
            return int(lines[4])
        except (IndexError, ValueError):
            return None

    def wait_master_known(self, port: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                if self.named_master_port() == port:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Sentinel does not name port {port} as master")
            time.sleep(0.05)

    def wait_replica_synced(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while b"master_link_status:up" not in self.replica.command("INFO", "replication"):
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync with the master")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._sentinel is not None:
            self._sentinel.terminate()
            try:
                self._sentinel.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._sentinel.kill()
                self._sentinel.wait()
            self._sentinel = None
        self.replica.stop()
        self.master.stop()
