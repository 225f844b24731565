"""Real services for tests, started as child processes on free loopback ports and stopped by
their own pid. With ``CALLPULSE_TEST_BACKEND=docker`` and a Docker engine, Kafka comes from
testcontainers instead. A missing service is an error, never a skip."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from callpulse.embedded import EmbeddedBroker, free_port, wait_for_port

REPO = Path(__file__).resolve().parents[1]


class DockerKafka:
    """Apache Kafka from testcontainers (used only where a Docker engine exists)."""

    def __init__(self) -> None:
        from testcontainers.kafka import KafkaContainer

        self.container = KafkaContainer("apache/kafka:3.8.0").with_kraft()

    def start(self) -> DockerKafka:
        self.container.start()
        self.bootstrap = self.container.get_bootstrap_server()
        return self

    def stop(self) -> None:
        self.container.stop()


def start_kafka(log_dir: Path) -> Any:
    if os.environ.get("CALLPULSE_TEST_BACKEND") == "docker":
        return DockerKafka().start()
    return EmbeddedBroker(log_path=log_dir / "tansu.log").start()


CLICKHOUSE_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{tcp}</tcp_port>
  <http_port>{http}</http_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <mark_cache_size>53687091</mark_cache_size>
  <max_concurrent_queries>50</max_concurrent_queries>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
</yandex>
"""

CLICKHOUSE_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"""


class ClickHouseServer:
    """Debian's clickhouse-server with its own config and data folder."""

    def __init__(self, base: Path) -> None:
        self.dir = base
        self.tcp_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"clickhouse://default:@127.0.0.1:{self.tcp_port}/default"

    def start(self, timeout: float = 60.0) -> ClickHouseServer:
        binary = shutil.which("clickhouse-server") or "/usr/sbin/clickhouse-server"
        if not Path(binary).exists():
            raise FileNotFoundError("clickhouse-server is not installed: run `make test` (it installs it)")
        for sub in ("data", "tmp", "user_files", "format_schemas"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "config.xml").write_text(
            CLICKHOUSE_CONFIG.format(d=self.dir, tcp=self.tcp_port, http=self.http_port)
        )
        (self.dir / "users.xml").write_text(CLICKHOUSE_USERS)
        self.proc = subprocess.Popen(
            [binary, f"--config-file={self.dir / 'config.xml'}"],
            stdout=open(self.dir / "stdout.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port(self.tcp_port, timeout)
        except TimeoutError as exc:
            self.stop()
            log = (self.dir / "error.log").read_text() if (self.dir / "error.log").exists() else ""
            raise RuntimeError(f"clickhouse-server did not start: {log[-2000:]}") from exc
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


class WorkerProcess:
    """A ``callpulse worker`` (or ``sink``) in its own process group, configured by environment."""

    READY = {"worker": "restored", "sink": "migrations applied"}

    def __init__(self, env: dict[str, str], log: Path, command: str = "worker") -> None:
        self.env = {**os.environ, **env}
        self.log = log
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callpulse", self.command, "--loglevel", "info"],
            env=self.env,
            cwd=REPO,
            stdout=open(self.log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until the worker has been assigned partitions and restored their state (a sink: has
        connected to ClickHouse and applied the migrations)."""
        marker = self.READY[self.command]
        wait_until(
            lambda: self.log.exists() and marker in self.log.read_text(errors="replace"),
            timeout,
            what=f"{self.command} ready ({self.log})",
        )

    def rss_bytes(self) -> int:
        """Resident memory of the process (Linux /proc)."""
        assert self.proc is not None
        pages = int(Path(f"/proc/{self.proc.pid}/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM, as an orchestrator does)."""
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """Crash: SIGKILL, nothing flushed."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.5, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")


def tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
