"""The ClickHouse sink end to end, on the real ClickHouse server (Debian's 18.16) and on chdb:
events go through the real broker, a KPI worker and a sink process; what lands in ClickHouse is
compared with the batch reference, the raw events sent, and the examples in docs/bi.md."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from callpulse.embedded import free_port
from callpulse.simulator import SimConfig, disorder, simulate
from schemas.records import DeadLetter, KpiRecord, StaffingRecord, WarningLevel, WarningRecord
from sinks.clickhouse_client import ChdbClient, ClickHouseClient, NativeClient
from sinks.rows import KPI_SCALARS
from sinks.schema import RAW_TABLES
from streams.early_warning.backtest import run_detector
from streams.early_warning.detector import EarlyWarningDetector
from streams.early_warning.rules import load_rules
from streams.kafka import EventProducer, client_kwargs
from streams.reference import arrivals_from_events, recompute_as_configured
from tests.dashboards import clickhouse_sql
from tests.dashboards import targets as dashboard_targets
from tests.kpicompare import differences
from tests.services import REPO, ClickHouseServer, wait_until

START = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)  # a Monday morning
SETTINGS = {"partitions": 4, "grace_s": 120, "idle_timeout_s": 900.0, "batch_max": 2000}
FAMILY_TABLE = dict(zip(("calls", "tickets", "surveys", "agents"), RAW_TABLES, strict=True))
PHONE = re.compile(r"\+1 555 \d{3} \d{4}|(?<![\d.])1555\d{7}(?![\d.])")  # as sent, or normalised


def simulated(hours: float, seed: int) -> list[tuple[str, Any]]:
    events = simulate(SimConfig(start=START, duration=timedelta(hours=hours), seed=seed))
    return disorder(events, seed, shuffle_s=60, duplicate_rate=0.01, late_rate=0.003, late_by_s=900)


class Store:
    """Where a test's sink writes: an own database on the shared server, or an own chdb folder."""

    def __init__(self, backend: str, server: ClickHouseServer | None, tmp: Path, database: str) -> None:
        self.backend = backend
        self.server = server
        self.path = tmp / "var"
        self.database = database

    def env(self) -> dict[str, str]:
        env = {"CALLPULSE_CLICKHOUSE_DATABASE": self.database}
        if self.backend == "server":
            assert self.server is not None
            env["CALLPULSE_CLICKHOUSE_DSN"] = self.server.dsn
        else:
            env["CALLPULSE_DATA_DIR"] = str(self.path)
        return env

    def client(self) -> ClickHouseClient:
        """chdb: only once the sink has stopped (one process at a time may open it)."""
        if self.backend == "server":
            assert self.server is not None
            return NativeClient(self.server.dsn)
        return ChdbClient(self.path / "chdb")

    def count(self, client: ClickHouseClient, table: str, final: bool = True) -> int:
        return int(client.execute(f"SELECT count() FROM {self.database}.{table}{' FINAL' if final else ''}").scalar())


def sink_metric(port: int, name: str, labels: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def expected_raw(arriving: list[tuple[str, Any]]) -> dict[str, int]:
    ids: dict[str, set[str]] = {}
    for family, e in arriving:
        ids.setdefault(FAMILY_TABLE[family], set()).add(e.event_id)
    return {t: len(v) for t, v in ids.items()}


def reference(pipe: Any, arriving: list[tuple[str, Any]], final: float) -> dict[str, KpiRecord]:
    s = pipe.settings
    records, _ = recompute_as_configured(arrivals_from_events(arriving, s.partitions, final), s)
    return {r.key(): r for r in records}


def staffing_reference(pipe: Any, expected: dict[str, KpiRecord]) -> list[StaffingRecord]:
    """The staffing intervals the shipped rules make of the reference's base windows."""
    s = pipe.settings
    detector = EarlyWarningDetector(load_rules(), s.base_window_s, tuple(s.sl_thresholds_s), s.sl_default_variant)
    base = sorted(
        (r for r in expected.values() if r.window_size_s == s.base_window_s),
        key=lambda r: (r.window_end, r.dimension, r.dimension_value),
    )
    run_detector(detector, base)
    return detector.drain_staffing()


def _time(v: Any) -> datetime:
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    return v if v.tzinfo else v.replace(tzinfo=UTC)


def record_from_row(d: dict[str, Any]) -> KpiRecord:
    """The inverse of ``sinks.rows.kpi_row``: a kpi_window row back into the Kafka record."""
    rec = {n: d[n] for n in KPI_SCALARS}
    rec["window_start"], rec["window_end"] = _time(d["window_start"]), _time(d["window_end"])
    t = [str(x) for x in d["sl_threshold_s"]]
    rec["answered_within"] = dict(zip(t, d["answered_within"], strict=True))
    rec["abandoned_within"] = dict(zip(t, d["abandoned_within"], strict=True))
    rec["service_level_variants"] = dict(zip(d["service_level_variant"], d["service_level_variant_value"], strict=True))
    rec["not_ready_by_reason"] = dict(zip(d["not_ready_reason"], d["not_ready_reason_seconds"], strict=True))
    rec["csat_by_wait"] = {
        b: {"responses": n, "mean": m, "top2_ratio": t2}
        for b, n, m, t2 in zip(
            d["csat_wait_bucket"], d["csat_wait_responses"], d["csat_wait_mean"], d["csat_wait_top2_ratio"], strict=True
        )
    }
    return KpiRecord.model_validate(rec)


def bi_queries() -> dict[str, str]:
    text = (REPO / "docs" / "bi.md").read_text()
    return dict(re.findall(r"<!-- query: (\w+) -->\n```sql\n(.*?)```", text, re.S))


def a_warning() -> WarningRecord:
    t = START + timedelta(hours=2)
    return WarningRecord(
        warning_id="w-test-1",
        rule="service_level_collapse",
        kpi="service_level",
        dimension="queue",
        dimension_value="billing",
        level=WarningLevel.red,
        change="opened",
        value=0.41,
        threshold=0.6,
        started_at=t,
        updated_at=t,
        reason="service level 41 % < 60 % for 3 windows",
    )


async def produce(pipe: Any, items: list[tuple[str, Any]], final: float | None, extra: bool = False) -> None:
    async with EventProducer(pipe.settings) as prod:
        await prod.send_events(items, 20)
        if final is not None:
            await prod.send_watermarks(final)
    if extra:  # one warning change, and one record in cc.kpis that is not a KpiRecord
        producer = AIOKafkaProducer(**client_kwargs(pipe.settings))
        await producer.start()
        try:
            await producer.send_and_wait(pipe.topics.warnings, a_warning().model_dump_json().encode(), b"w-test-1")
            await producer.send_and_wait(pipe.topics.kpis, b'{"not": "a kpi record"}', b"garbage")
        finally:
            await producer.stop()


def run_day(pipeline_factory: Any, store_for: Any, seed: int, hours: float = 6) -> tuple[Any, Any, Any, Any, int]:
    pipe = pipeline_factory(**SETTINGS)
    store = store_for(pipe)
    arriving = simulated(hours, seed)
    final = max(e.ts.timestamp() for _, e in arriving) + 600
    expected = reference(pipe, arriving, final)
    port = free_port()
    pipe.start_worker()
    sink = pipe.start_sink(**store.env(), CALLPULSE_SINK_METRICS_PORT=str(port))
    sink.wait_ready()
    return pipe, store, (arriving, final), expected, port


def wait_for_rows(port: int, want: dict[str, int], timeout: float = 300) -> None:
    """Until the sink's metrics say every table got at least ``want`` rows acknowledged."""

    def done() -> bool:
        return all(sink_metric(port, "callpulse_sink_rows_total", f'{{table="{t}"}}') >= n for t, n in want.items())

    wait_until(done, timeout, interval=1.0, what=f"sink rows {want}")


@pytest.fixture()
def store_for(clickhouse_server: ClickHouseServer, tmp_path: Path, request: Any) -> Any:
    backend = getattr(request, "param", "server")

    def make(pipe: Any) -> Store:
        db = "cp_" + re.sub(r"\W", "_", pipe.settings.app_id)
        return Store(backend, clickhouse_server if backend == "server" else None, tmp_path, db)

    return make


@pytest.mark.slow
@pytest.mark.parametrize("store_for", ["server", "chdb"], indirect=True)
def test_stream_lands_in_clickhouse_equal_to_reference(pipeline_factory: Any, store_for: Any) -> None:
    pipe, store, (arriving, final), expected, port = run_day(pipeline_factory, store_for, seed=41)
    asyncio.run(produce(pipe, arriving, final, extra=True))
    raw = expected_raw(arriving)
    wait_for_rows(port, {**raw, "kpi_window": len(expected)})
    # the worker's own warnings (the simulated morning has some) plus the one produced above
    changes = {
        (w.warning_id, w.updated_at, w.change)
        for w in (WarningRecord.model_validate_json(r.value) for r in asyncio.run(pipe.read(pipe.topics.warnings)))
    }
    wait_for_rows(port, {"warnings": len(changes)})
    # staffing intervals: what the detector makes of the reference's windows, independently
    staffing = {s.key(): s for s in staffing_reference(pipe, expected)}
    assert len(staffing) >= 4 * 5 * 4  # 4 queues + all, hourly quarters of the morning
    wait_for_rows(port, {"staffing_interval": len(staffing)})
    if store.backend == "chdb":
        pipe.stop()  # releases the embedded store
    client = store.client()
    try:
        db = store.database
        # raw events: each exactly once
        for table, n in raw.items():
            assert store.count(client, table) == n, table
        # KPI windows: every record equal to the batch reference, none extra
        rows = client.execute(f"SELECT * FROM {db}.kpi_window FINAL").dicts()
        got = {r.key(): r for r in map(record_from_row, rows)}
        assert len(rows) == len(expected)
        assert differences(expected, got) == []
        assert store.count(client, "warnings") == len(changes)
        rows = client.execute(f"SELECT * FROM {db}.staffing_interval FINAL").dicts()
        got = {
            StaffingRecord.model_construct(
                interval_s=r["interval_s"],
                interval_start=_time(r["interval_start"]),
                dimension=r["dimension"],
                dimension_value=r["dimension_value"],
            ).key(): r
            for r in rows
        }
        assert set(got) == set(staffing)
        for key, want in staffing.items():
            row = got[key]
            for field in ("offered", "windows", "required_agents_actual", "required_agents_forecast"):
                assert row[field] == getattr(want, field), (key, field)
            for field in ("staffed_agents", "gap_agents", "expected_service_level", "aht_seconds"):
                w = getattr(want, field)
                assert (row[field] is None) == (w is None) and (w is None or abs(row[field] - w) < 1e-9), (key, field)
        gaps = [r["gap_agents"] for r in rows if r["gap_agents"] is not None]
        assert len(gaps) > len(rows) / 2 and min(gaps) < 0  # a normal morning: staffed above the need
        # no personal data in clear, in any table
        customers = {e.customer_id for _, e in arriving if getattr(e, "customer_id", None)}
        assert customers and len(customers) > 10
        for table in (*RAW_TABLES, "kpi_window", "warnings", "staffing_interval"):
            dump = orjson.dumps(client.execute(f"SELECT * FROM {db}.{table}").rows, default=str).decode()
            assert "cust-" not in dump, table
            assert not PHONE.search(dump), table
        comments = client.execute(f"SELECT comment_scrubbed FROM {db}.survey_responses FINAL").rows
        assert any("[phone]" in (c or "") for (c,) in comments)
        # every example query in docs/bi.md runs and returns rows
        results = {}
        for name, sql in bi_queries().items():
            results[name] = client.execute(sql.replace("callpulse.", f"{db}."))
            assert results[name].rows, name
        # ... with the expected values: offered per queue and day = the reference's hourly windows
        want: dict[tuple[str, str], int] = {}
        for r in expected.values():
            if r.window_size_s == 3600 and r.dimension == "queue":
                k = (str(r.window_start.date()), r.dimension_value)
                want[k] = want.get(k, 0) + r.offered
        by_queue = {(str(d["day"]), d["queue"]): d["offered"] for d in results["sl_by_queue_by_day"].dicts()}
        assert by_queue == want
        hour_of_week = results["abandon_rate_by_hour_of_week"].dicts()
        total = sum(r.offered for r in expected.values() if r.window_size_s == 3600 and r.dimension == "all")
        assert sum(int(d["offered_contacts"]) for d in hour_of_week) == total
        assert all(0 <= float(d["abandon_rate"]) <= 1 for d in hour_of_week)
        latest = {d["warning_id"]: d["current_level"] for d in results["warnings_latest_state"].dicts()}
        assert latest["w-test-1"] == "red"
        # every SQL query of the provisioned Grafana dashboards runs and returns rows
        for dashboard, title, target in dashboard_targets("grafana-clickhouse-datasource"):
            rows = client.execute(clickhouse_sql(target["rawSql"], db)).rows
            assert rows, f"{dashboard} / {title}"
    finally:
        client.close()
    # the record that is not a KpiRecord went to the dead-letter topic, with its bytes
    dlq = asyncio.run(pipe.read(pipe.topics.dlq, idle_s=1.0))
    from_sink = [r for r in dlq if r.value == b'{"not": "a kpi record"}']
    assert len(from_sink) == 1
    assert DeadLetter.from_headers(from_sink[0].headers).source_topic == pipe.topics.kpis


@pytest.mark.slow
def test_clickhouse_outage_pauses_the_sink_and_loses_nothing(
    pipeline_factory: Any, store_for: Any, clickhouse_server: ClickHouseServer
) -> None:
    pipe, store, (arriving, final), expected, port = run_day(pipeline_factory, store_for, seed=42)
    sink = pipe.workers[-1]
    half = len(arriving) // 2
    raw = expected_raw(arriving)
    asyncio.run(produce(pipe, arriving[:half], None))
    wait_until(lambda: sink_metric(port, "callpulse_sink_rows_total", '{table="call_events"}') > 0, 120)
    rss_before = sink.rss_bytes()

    clickhouse_server.stop()
    try:
        asyncio.run(produce(pipe, arriving[half:], final))
        wait_until(lambda: sink_metric(port, "callpulse_sink_failing") == 1, 60, what="sink notices the outage")
        rows_at_outage = sink_metric(port, "callpulse_sink_rows_total", '{table="call_events"}')
        rss_peak = rss_before
        for _ in range(20):  # 20 s down while the rest of the day streams in
            time.sleep(1)
            rss_peak = max(rss_peak, sink.rss_bytes())
            assert sink.alive()
        # consumption paused: nothing was acknowledged while the server was down
        assert sink_metric(port, "callpulse_sink_rows_total", '{table="call_events"}') == rows_at_outage
    finally:
        clickhouse_server.start()
    print(f"sink RSS before outage {rss_before / 2**20:.0f} MiB, peak during it {rss_peak / 2**20:.0f} MiB")
    assert rss_peak < rss_before + 150 * 2**20

    wait_for_rows(port, {**raw, "kpi_window": len(expected)})
    client = store.client()
    try:
        for table, n in raw.items():
            assert store.count(client, table) == n, table
        rows = client.execute(f"SELECT * FROM {store.database}.kpi_window FINAL").dicts()
        assert len(rows) == len(expected)
        assert differences(expected, {r.key(): r for r in map(record_from_row, rows)}) == []
    finally:
        client.close()
    assert sink_metric(port, "callpulse_sink_errors_total", '{table="call_events"}') > 0


@pytest.mark.slow
def test_sink_killed_after_insert_before_commit_leaves_no_duplicates(pipeline_factory: Any, store_for: Any) -> None:
    pipe = pipeline_factory(**SETTINGS)
    store = store_for(pipe)
    arriving = simulated(3, seed=43)
    raw = expected_raw(arriving)
    port = free_port()
    crashing = pipe.start_sink(
        **store.env(), CALLPULSE_SINK_METRICS_PORT=str(port), CALLPULSE_TEST_KILL_AFTER_INSERTS="2"
    )
    crashing.wait_ready()
    asyncio.run(produce(pipe, arriving, None))
    wait_until(lambda: not crashing.alive(), 120, what="the sink kills itself after its 2nd acknowledged insert")
    assert "SIGKILL before the offset commit" in crashing.log.read_text()

    client = store.client()
    try:
        landed_before_crash = sum(store.count(client, t, final=False) for t in RAW_TABLES)
        assert landed_before_crash > 0
        sink = pipe.start_sink(**store.env(), CALLPULSE_SINK_METRICS_PORT=str(port))
        sink.wait_ready()
        wait_for_rows(port, raw)
        wait_until(
            lambda: all(store.count(client, t) == n for t, n in raw.items()), 60, what="all raw events in ClickHouse"
        )
        again = sum(sink_metric(port, "callpulse_sink_rows_total", f'{{table="{t}"}}') for t in RAW_TABLES)
        unique = sum(raw.values())
        print(f"rows acknowledged before the kill {landed_before_crash}, after restart {again:.0f}, unique {unique}")
        # what was acknowledged before the kill was delivered again (its offsets were never committed) ...
        assert landed_before_crash + again > unique
        # ... and still counts once
        for t, n in raw.items():
            assert store.count(client, t) == n
            ids = int(client.execute(f"SELECT uniqExact(event_id) FROM {store.database}.{t} FINAL").scalar())
            assert ids == n
    finally:
        client.close()
