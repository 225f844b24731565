"""Prometheus metrics of the worker, on a registry of its own (not the global default).

Names follow Prometheus conventions: ``callpulse_`` prefix, base units, counters end in
``_total``. Labels are bounded: topic, outcome, reason; never an agent or a customer.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server

from sinks.kpi_metrics import KpiGauges


class WorkerMetrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, thresholds: Iterable[int] = (20, 30), max_values: int = 50
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # process_start_time_seconds and friends: a worker exits when it cannot go on, and its
        # restarts are what the CallpulseRestarting alert counts
        ProcessCollector(registry=r)
        self.kpis = KpiGauges(r, thresholds, max_values)
        self.events = Counter(
            "callpulse_events_total",
            "Input events by topic and outcome (accepted, duplicate, late, invalid, replayed)",
            ["topic", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "callpulse_dead_letters_total",
            "Records sent to the dead-letter topic, by reason",
            ["topic", "reason"],
            registry=r,
        )
        self.records = Counter("callpulse_input_records_total", "Kafka records read", ["topic"], registry=r)
        # by stage: the merge stage runs in one worker (cc.kpi-partials has one partition), so
        # its busy time (rate of the sum) is the share of a core the merge owner gives it
        self.batch_seconds = Histogram(
            "callpulse_batch_duration_seconds",
            "Time to process and persist one batch, by stage: ingest (stage 1: decoding, per-partition "
            "state, partial windows) or merge (stage 2: final windows, KPI records, warnings, staffing)",
            ["stage"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),  # catch-up batches take seconds
        )
        self.kpi_records = Counter("callpulse_kpi_records_total", "Final KPI records emitted", ["window"], registry=r)
        self.stream_time = Gauge(
            "callpulse_stream_time_seconds", "Lowest stream time over the sources this worker owns", registry=r
        )
        self.warning_changes = Counter(
            "callpulse_warning_changes_total", "Warning lifecycle changes emitted", ["rule", "change"], registry=r
        )
        self.consumer_lag = Gauge(
            "callpulse_consumer_lag_records",
            "Records behind the end of each assigned input partition",
            ["topic", "partition"],
            registry=r,
        )
        self.emit_delay = Histogram(
            "callpulse_window_emit_delay_seconds",
            "Processing latency: wall time when a base window's KPIs were published minus the window's end "
            "(event time); includes the grace period",
            registry=r,
            buckets=(1, 5, 15, 30, 60, 120, 180, 300, 600, 1800, 3600),
        )
        self.gc_pause = Histogram(
            "callpulse_gc_pause_seconds",
            "Pauses of the cyclic garbage collector in the worker, by generation (2: full; streams/app.py BatchGc)",
            ["generation"],
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)


class SinkMetrics:
    """Metrics of the ClickHouse sink (its own process and registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # restarts, as the worker's
        self.rows = Counter(
            "callpulse_sink_rows_total", "Rows ClickHouse acknowledged, by table", ["table"], registry=r
        )
        self.skipped = Counter(
            "callpulse_sink_skipped_total",
            "Records not written: invalid (the worker dead-letters them) or duplicate within a batch",
            ["topic", "reason"],
            registry=r,
        )
        self.insert_seconds = Histogram(
            "callpulse_sink_insert_duration_seconds",
            "Time of one acknowledged insert",
            ["table"],
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.errors = Counter(
            "callpulse_sink_errors_total", "Failed insert attempts (each is retried)", ["table"], registry=r
        )
        self.last_success = Gauge(
            "callpulse_sink_last_success_timestamp_seconds",
            "Wall time of the last acknowledged insert, by table",
            ["table"],
            registry=r,
        )
        self.failing = Gauge(
            "callpulse_sink_failing", "1 while inserts fail and consumption is paused, else 0", registry=r
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
