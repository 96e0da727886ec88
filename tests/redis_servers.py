"""Real redis-server processes for the tests, on free ports, that a test can kill,
freeze (SIGSTOP), thaw and restart; and a three-node Redis Cluster."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

START_TIMEOUT_S = 15.0


def require_redis() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli are needed: `make test` installs them")


def free_port(cluster_bus: bool = False) -> int:
    """A free TCP port; for a cluster node, one whose bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not cluster_bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port found")


class RedisServer:
    def __init__(
        self,
        directory: Path,
        *,
        cluster: bool = False,
        unix_socket: bool = False,
        tls: bool = False,
    ):
        require_redis()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port(cluster_bus=cluster)
        self.cluster = cluster
        self.socket_path = directory / "redis.sock" if unix_socket else None
        self.certificate = self._make_certificate() if tls else None
        self.process: subprocess.Popen[bytes] | None = None
        self._stats: redis.Redis | None = None

    @property
    def url(self) -> str:
        if self.certificate is not None:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.certificate}"
        return f"redis://127.0.0.1:{self.port}/0"

    def _make_certificate(self) -> Path:
        """A self-signed certificate for 127.0.0.1 (key next to it)."""
        if shutil.which("openssl") is None:
            pytest.fail("openssl is needed for the TLS tests")
        certificate, key = self.directory / "server.crt", self.directory / "server.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
            + ["-keyout", str(key), "-out", str(certificate), "-subj", "/CN=127.0.0.1"]
            + ["-addext", "subjectAltName=IP:127.0.0.1"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return certificate

    @property
    def unix_url(self) -> str:
        assert self.socket_path is not None
        return f"unix://{self.socket_path}"

    def start(self) -> RedisServer:
        certificate = self.certificate
        args = [
            "redis-server",
            "--port", "0" if certificate else str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-node-timeout", "3000"]
            args += ["--cluster-config-file", f"nodes-{self.port}.conf"]
        if self.socket_path is not None:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if certificate is not None:
            key = certificate.with_suffix(".key")
            args += ["--tls-port", str(self.port), "--tls-auth-clients", "no"]
            args += ["--tls-cert-file", str(certificate), "--tls-key-file", str(key)]
            args += ["--tls-ca-cert-file", str(certificate)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, decode_responses=True)

    def kill(self) -> None:
        if self.process is not None:
            self.thaw()
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
        if self._stats is not None:
            self._stats.close()
            self._stats = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

    def ensure_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.start()
        else:
            self.thaw()

    def stats(self) -> dict[str, int]:
        """Commands by name (``hmget``: calls) and reads processed (one per round trip of a
        pipelined client), since the last reset_stats."""
        client = self._stats_client()
        # first: the count includes this INFO's own read, and nothing else of ours
        reads = int(client.info("stats")["total_reads_processed"]) - 1
        counts = {
            name.removeprefix("cmdstat_"): int(info["calls"])
            for name, info in client.info("commandstats").items()
        }
        counts["reads"] = reads
        return counts

    def reset_stats(self) -> None:
        self._stats_client().config_resetstat()

    def _stats_client(self) -> redis.Redis:
        # one connection, opened beforehand: its handshake does not count as reads
        if self._stats is None:
            self._stats = redis.Redis(
                port=self.port,
                socket_timeout=5,
                decode_responses=True,
                single_connection_client=True,
            )
            self._stats.ping()
        return self._stats


class RedisCluster:
    """Three master nodes, slots spread by ``redis-cli --cluster create``."""

    def __init__(self, directory: Path) -> None:
        self.nodes = [RedisServer(directory / f"node{i}", cluster=True) for i in range(3)]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0"]
            + ["--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while not all(n.client().cluster("info")["cluster_state"] == "ok" for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        return self

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, decode_responses=True)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()
