"""``callpulse demo``: the whole pipeline on one machine, with nothing to install.

It starts the embedded Kafka broker (Tansu) unless ``CALLPULSE_KAFKA_BOOTSTRAP`` is set, a
worker (KPIs, warnings, metrics on ``CALLPULSE_METRICS_PORT``), the ClickHouse sink (embedded
chdb under ``CALLPULSE_DATA_DIR`` unless ``CALLPULSE_CLICKHOUSE_DSN`` is set), and replays a
simulated working day at ``--speed`` (60 = one simulated hour per minute) with a staffing drop
scheduled, while a terminal view shows per-queue KPIs from the metrics endpoint (what Prometheus
would scrape) and the warnings as they change. Ctrl-C or ``--duration`` stops everything:
the producer, then (once the sink has caught up) the sink and the worker, then the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from callpulse.config import Settings

QUEUE_COLUMNS = (
    ("SL 30s", "callpulse_service_level_ratio", "pct"),
    ("abandon", "callpulse_abandon_rate_ratio", "pct"),
    ("ASA s", "callpulse_asa_seconds", "num"),
    ("waiting", "callpulse_contacts_waiting", "int"),
    ("offered 15m", "callpulse_contacts_offered", "int"),
    ("occupancy", "callpulse_occupancy_ratio", "pct"),
    ("staffed", "callpulse_staffing_staffed_agents", "num"),
    ("gap", "callpulse_staffing_gap_agents", "num"),
    ("CSAT 1h", "callpulse_csat_score", "num2"),
)


def demo_start(hours: float, now: datetime) -> datetime:
    """The most recent weekday 08:00 UTC that leaves ``hours`` of simulated day before now:
    a busy day, entirely in the past (events from the future are rejected)."""
    day = now.replace(hour=8, minute=0, second=0, microsecond=0)
    while day + timedelta(hours=hours) > now or day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


@dataclass
class View:
    """What the terminal shows: the latest scrape of the worker's metrics and warning changes."""

    gauges: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    warnings: dict[tuple[str, str, str], tuple[str, str]] = field(default_factory=dict)  # -> (level, reason)
    history: list[str] = field(default_factory=list)
    sim_time: datetime | None = None
    produced: int = 0
    kpi_series: int = 0

    def scrape(self, port: int) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            return
        gauges: dict[tuple[str, str], dict[str, float]] = {}
        series = 0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = s.labels
                if "dimension" not in labels or labels["dimension"] not in ("queue", "all"):
                    continue
                if labels.get("threshold_seconds") not in (None, "30"):
                    continue
                series += 1
                gauges.setdefault((labels["dimension"], labels["value"]), {})[s.name] = s.value
        self.gauges = gauges
        self.kpi_series = max(self.kpi_series, series)

    def on_warning(self, w: Any) -> None:
        key = (w.rule, w.dimension, w.dimension_value)
        if w.level is None:
            self.warnings.pop(key, None)
        else:
            self.warnings[key] = (w.level.value, w.reason)
        stamp = w.updated_at.strftime("%H:%M")
        self.history.append(f"{stamp} {w.change:12} {(w.level.value if w.level else '-'):6} {w.reason}")
        del self.history[:-6]

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        clock = self.sim_time.strftime("%a %H:%M UTC") if self.sim_time else "-"
        table = Table(title=f"callpulse demo — simulated time {clock}, {self.produced} events produced")
        table.add_column("queue")
        for title, _, _ in QUEUE_COLUMNS:
            table.add_column(title, justify="right")
        table.add_column("warning")
        worst = {}
        for (_rule, dim, value), (level, _) in self.warnings.items():
            rank = {"yellow": 1, "orange": 2, "red": 3}[level]
            if rank > worst.get((dim, value or "all"), (0, ""))[0]:
                worst[(dim, value or "all")] = (rank, level)
        for (dim, value), g in sorted(self.gauges.items(), key=lambda kv: (kv[0][0] != "all", kv[0][1])):
            cells = [_fmt(g.get(metric), kind) for _, metric, kind in QUEUE_COLUMNS]
            rank, level = worst.get((dim, value), (0, ""))
            style = {"red": "bold white on red", "orange": "black on dark_orange", "yellow": "black on yellow"}
            table.add_row(value if dim == "queue" else "ALL", *cells, Text(level, style=style.get(level, "")))
        lines = [Text(h) for h in self.history] or [Text("no warning changes yet")]
        return Group(table, Text("warning changes (latest last):", style="bold"), *lines)


def _fmt(v: float | None, kind: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "int":
        return f"{v:.0f}"
    return f"{v:.2f}" if kind == "num2" else f"{v:.0f}"


def _spawn(command: str, env: dict[str, str], log_path: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "callpulse", command, "--loglevel", "warning"],
        env=env,
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _sink_rows(port: int) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return -1.0
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("callpulse_sink_rows_total{")
    )


def run_demo(settings: Settings, duration: float | None, speed: float, hours: float, seed: int) -> int:
    from rich.console import Console
    from rich.live import Live

    from callpulse.embedded import EmbeddedBroker
    from callpulse.simulator import Incident, SimConfig, simulate
    from streams.kafka import ensure_topics

    console = Console()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = None
    if not settings.kafka_bootstrap:
        broker = EmbeddedBroker(settings.embedded_broker_port, log_path=settings.data_dir / "broker.log").start()
        console.print(f"embedded Kafka broker (Tansu) on {broker.bootstrap}")
    env = {
        **os.environ,
        "CALLPULSE_KAFKA_BOOTSTRAP": settings.bootstrap(),
        "CALLPULSE_DATA_DIR": str(settings.data_dir.resolve()),
        "CALLPULSE_IDLE_TIMEOUT_S": "10",
        "CALLPULSE_METRICS_PORT": str(settings.metrics_port),
        "CALLPULSE_SINK_METRICS_PORT": str(settings.sink_metrics_port),
        "CALLPULSE_SINK_FLUSH_INTERVAL_S": "1",
    }
    asyncio.run(ensure_topics(settings))
    logs = {command: settings.data_dir / f"{command}.log" for command in ("worker", "sink")}
    procs = {command: _spawn(command, env, log) for command, log in logs.items()}

    def supervise() -> None:
        """As an orchestrator does: a worker or sink that exited (they do when they cannot go
        on, e.g. a write the broker did not take) starts again from its committed offsets."""
        for command, proc in procs.items():
            if proc.poll() is not None:
                log = logs[command]
                console.print(f"[red]{command} exited with code {proc.returncode} (see {log}); starting it again")
                procs[command] = _spawn(command, env, log)

    store = settings.clickhouse_dsn or f"embedded chdb at {settings.chdb_path}"
    console.print(f"worker metrics: http://127.0.0.1:{settings.metrics_port}/metrics   ClickHouse: {store}")

    start = demo_start(hours, datetime.now(UTC))
    drop = Incident("staffing_drop", None, start + timedelta(minutes=40), start + timedelta(minutes=100), 0.35)
    events = simulate(SimConfig(start=start, duration=timedelta(hours=hours), seed=seed, incidents=(drop,)))
    console.print(
        f"simulating {start:%a %Y-%m-%d %H:%M} + {hours:g} h at {speed:g}x ({len(events)} events); "
        f"scheduled incident: staffing drop to 35 % {drop.start:%H:%M}-{drop.end:%H:%M} UTC"
    )
    view = View()
    deadline = time.monotonic() + duration if duration else None
    try:
        with Live(view.render(), console=console, refresh_per_second=2) as live:
            asyncio.run(_replay(settings, events, start, speed, view, live, deadline, supervise))
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        # let the sink catch up (rows stop growing), then stop everything in order
        last, stable_since, limit = -2.0, time.monotonic(), time.monotonic() + 30
        while time.monotonic() < limit and time.monotonic() - stable_since < 3:
            rows = _sink_rows(settings.sink_metrics_port)
            if rows != last:
                last, stable_since = rows, time.monotonic()
            time.sleep(0.5)
        _stop(procs["sink"])
        _stop(procs["worker"])
        if broker:
            broker.stop()
    open_warnings = ", ".join(f"{r} {v or 'all'} {lv}" for (r, _, v), (lv, _) in view.warnings.items()) or "none"
    console.print(
        f"metrics endpoint served {view.kpi_series} KPI gauge series; open warnings at the end: {open_warnings}"
    )
    console.print(f"data: {store}  (logs: {settings.data_dir}/worker.log, sink.log)")
    console.print(
        'try:  callpulse query "SELECT hour, dimension_value AS queue, offered, round(service_level, 3) AS sl, '
        "round(asa_seconds, 1) AS asa FROM callpulse.kpi_hourly WHERE dimension = 'queue' ORDER BY hour, queue\""
    )
    console.print(
        '      callpulse query "SELECT updated_at, rule, dimension_value, change, level, reason '
        'FROM callpulse.warnings FINAL ORDER BY updated_at"'
    )
    return 0


async def _replay(
    settings: Settings,
    events: list[tuple[str, Any]],
    start: datetime,
    speed: float,
    view: View,
    live: Any,
    deadline: float | None,
    supervise: Callable[[], None],
) -> None:
    """Produce events paced by simulated time; follow cc.warnings and the metrics meanwhile."""
    from aiokafka import AIOKafkaConsumer

    from schemas.records import WarningRecord
    from streams.kafka import EventProducer, client_kwargs

    consumer = AIOKafkaConsumer(settings.topics.warnings, **client_kwargs(settings), auto_offset_reset="latest")
    await consumer.start()

    async def tick(event_time: float) -> bool:
        supervise()
        view.sim_time = datetime.fromtimestamp(event_time, UTC)
        batch = await consumer.getmany(timeout_ms=200)
        for records in batch.values():
            for r in records:
                with contextlib.suppress(ValueError):
                    view.on_warning(WarningRecord.model_validate_json(r.value))
        view.scrape(settings.metrics_port)
        live.update(view.render())
        return deadline is None or time.monotonic() < deadline

    try:
        async with EventProducer(settings) as producer:
            ordered = sorted(events, key=lambda fe: fe[1].ts)
            view.produced = await producer.replay(ordered, speed, on_tick=tick)
            if view.produced == len(ordered):
                await producer.send_watermarks(ordered[-1][1].ts.timestamp() + 300)
                for _ in range(10):  # the last windows close: show them
                    await tick(ordered[-1][1].ts.timestamp())
    finally:
        await consumer.stop()
