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
        self.log_from = 0  # where this run's lines start in the log

    def start(self) -> WorkerProcess:
        # the log may hold an earlier run's lines (a restart appends): readiness reads this run's
        self.log_from = self.log.stat().st_size if self.log.exists() else 0
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
        wait_until(self.is_ready, timeout, what=f"{self.command} ready ({self.log})")

    def is_ready(self) -> bool:
        """This run has logged that it is ready (not an earlier run in the same log)."""
        return self.READY[self.command] in self.output()

    def output(self) -> str:
        """What this run has logged so far (not an earlier run in the same log)."""
        if not self.log.exists():
            return ""
        with self.log.open("rb") as f:
            f.seek(self.log_from)
            return f.read().decode(errors="replace")

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


class PrometheusServer:
    """Debian's prometheus with a generated config: the repo's rule files, short intervals,
    scraping ``targets`` and alerting to ``alertmanager`` (host:port)."""

    def __init__(
        self, base: Path, targets: dict[str, list[str]], alertmanager: str | None, interval: str = "1s"
    ) -> None:
        import yaml

        self.dir = base
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        rules = REPO / "deploy" / "prometheus" / "rules"
        config: dict[str, Any] = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(rules / "recording.yml"), str(rules / "alerts.yml")],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": t}]} for job, t in targets.items()],
        }
        if alertmanager:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
        base.mkdir(parents=True, exist_ok=True)
        (base / "prometheus.yml").write_text(yaml.safe_dump(config))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        self.proc = _spawn_service(
            ("prometheus",),
            [
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--rules.alert.resend-delay=2s",
            ],
            self.dir / "prometheus.log",
            self.port,
        )
        return self

    def query(self, promql: str) -> list[dict[str, Any]]:
        import json
        import urllib.parse
        import urllib.request

        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        doc = json.loads(urllib.request.urlopen(url, timeout=10).read())
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def stop(self) -> None:
        _stop(self.proc)


class AlertmanagerServer:
    """Debian's prometheus-alertmanager with the repo's config, the webhook placeholders
    replaced by ``urls`` (as docker-compose does with its environment)."""

    def __init__(self, base: Path, urls: dict[str, str]) -> None:
        self.dir = base
        self.port = free_port()
        self.cluster_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)
        text = (REPO / "deploy" / "alertmanager" / "alertmanager.yml").read_text()
        for placeholder, url in urls.items():
            text = text.replace(placeholder, url)
        (base / "alertmanager.yml").write_text(text)

    def start(self) -> AlertmanagerServer:
        self.proc = _spawn_service(
            ("prometheus-alertmanager", "alertmanager"),
            [
                f"--config.file={self.dir / 'alertmanager.yml'}",
                f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--cluster.listen-address=127.0.0.1:{self.cluster_port}",
            ],
            self.dir / "alertmanager.log",
            self.port,
        )
        return self

    def stop(self) -> None:
        _stop(self.proc)


class WebhookReceiver:
    """A local HTTP endpoint that records what Alertmanager posts, per path."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        self.received: list[tuple[str, dict[str, Any]]] = []
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def alerts(self, path: str) -> list[dict[str, Any]]:
        """Every alert in every notification to ``path`` (each with its ``status``)."""
        return [a for p, doc in list(self.received) if p == path for a in doc["alerts"]]

    def stop(self) -> None:
        self.server.shutdown()


def _spawn_service(names: tuple[str, ...], args: list[str], log: Path, port: int) -> subprocess.Popen[bytes]:
    """Start the first installed binary of ``names`` in its own process group; wait for its port."""
    binary = next((b for b in map(shutil.which, names) if b), None)
    if binary is None:
        raise FileNotFoundError(f"{names[0]} is not installed: run `make test` (it installs it)")
    proc = subprocess.Popen(
        [binary, *args],
        stdout=open(log, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for_port(port, 60)
    return proc


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
