"""The ClickHouse sink as a Faust application of its own (``callpulse sink``).

It runs in its own consumer group (``<app_id>-sink``), as a Kafka Connect sink would: the BI
store being slow or down never holds back the real-time KPIs and alerts. Scale-out is Kafka's:
more sink processes in the group share the partitions.

Agents, one per topic: raw events -> ``call_events`` / ``ticket_events`` / ``survey_responses``
/ ``agent_state_events``; ``cc.kpis`` -> ``kpi_window``; ``cc.warnings`` -> ``warnings``;
``cc.staffing`` -> ``staffing_interval``. Each takes a batch of records, turns it into rows and
awaits ``ClickHouseSink.write``; the batch is acked (and its offsets later committed) only after
that returns, i.e. after ClickHouse has acknowledged every row. Batches come from
``take_records``, not faust's ``take_events``, which acks a batch also when its write raised or
was cancelled by a stopping worker; and only its acks count (faust's pure-Python stream iterator
acks the messages it skips while the worker stops): either would commit offsets of rows
ClickHouse never got (``streams/consumer.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import faust
from pydantic import BaseModel, ValidationError

from callpulse.config import Settings
from schemas.codec import EventDecoder
from schemas.pii import Pseudonymizer
from schemas.records import DeadLetter, DeadLetterReason, KpiRecord, StaffingRecord, WarningRecord
from sinks.clickhouse import ClickHouseSink, spans_of
from sinks.metrics import SinkMetrics
from sinks.rows import (
    KPI_COLUMNS,
    STAFFING_COLUMNS,
    WARNING_COLUMNS,
    Origin,
    RowBuilder,
    kpi_row,
    staffing_row,
    warning_row,
)
from streams.app import faust_settings
from streams.consumer import CallpulseApp, take_records
from streams.kafka import client_kwargs

log = logging.getLogger("callpulse.sink")


class SinkWorker:
    def __init__(self, settings: Settings, app: faust.App, metrics: SinkMetrics) -> None:
        self.settings = settings
        self.app = app
        self.metrics = metrics
        self.sink = ClickHouseSink(settings, metrics)
        self.rows = RowBuilder(Pseudonymizer(settings.pii_key.get_secret_value()))
        self.decoders = {
            family: EventDecoder(family, settings.max_future_skew_s) for family in settings.topics.inputs()
        }

    async def write_events(self, family: str, events: Sequence[faust.types.EventT]) -> None:
        table, columns = self.rows.event_table(family)
        now = datetime.now(UTC)
        decoder = self.decoders[family]
        rows: list[tuple[Any, ...]] = []
        seen: set[str] = set()
        invalid = duplicate = 0
        for ev in events:
            msg = ev.message
            wm, bad_wm = decoder.watermark(msg.headers, msg.value, now.timestamp())
            if wm is not None:
                continue
            if bad_wm is not None:  # the KPI worker dead-letters it, as the bad events below
                invalid += 1
                continue
            good, bad = decoder.decode(msg.value, now.timestamp())
            invalid += len(bad)  # the KPI worker dead-letters these (its consumer group reads them too)
            origin = Origin(msg.partition, msg.offset, now)
            for e in good:
                if e.event_id in seen:
                    duplicate += 1
                    continue
                seen.add(e.event_id)
                rows.append(self.rows.event_row(family, e, origin))
        topic = self.settings.topics.inputs()[family]
        if invalid:
            self.metrics.skipped.labels(topic, "invalid").inc(invalid)
        if duplicate:
            self.metrics.skipped.labels(topic, "duplicate").inc(duplicate)
        await self.sink.write(table, columns, rows, self._spans(events))

    async def write_kpis(self, events: Sequence[faust.types.EventT]) -> None:
        now = datetime.now(UTC)
        variant = self.settings.sl_default_variant
        rows = [
            kpi_row(rec, Origin(ev.message.partition, ev.message.offset, now), variant)
            for ev, rec in await self._parse(events, KpiRecord)
        ]
        await self.sink.write("kpi_window", KPI_COLUMNS, rows, self._spans(events))

    async def write_warnings(self, events: Sequence[faust.types.EventT]) -> None:
        now = datetime.now(UTC)
        rows = [
            warning_row(rec, Origin(ev.message.partition, ev.message.offset, now))
            for ev, rec in await self._parse(events, WarningRecord)
        ]
        await self.sink.write("warnings", WARNING_COLUMNS, rows, self._spans(events))

    async def write_staffing(self, events: Sequence[faust.types.EventT]) -> None:
        now = datetime.now(UTC)
        rows = [
            staffing_row(rec, Origin(ev.message.partition, ev.message.offset, now))
            for ev, rec in await self._parse(events, StaffingRecord)
        ]
        await self.sink.write("staffing_interval", STAFFING_COLUMNS, rows, self._spans(events))

    async def _parse(self, events: Sequence[faust.types.EventT], model: type[BaseModel]) -> list[tuple[Any, Any]]:
        """Parse records the pipeline itself produced; one that does not parse (a version
        mismatch) is dead-lettered with its bytes, never dropped and never a crash."""
        out = []
        for ev in events:
            msg = ev.message
            try:
                out.append((ev, model.model_validate_json(msg.value or b"")))
            except ValidationError as exc:
                letter = DeadLetter(
                    source_topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    reason=DeadLetterReason.invalid_value,
                    error=f"not a valid {model.__name__}: {exc.errors()[0]['msg']}",
                    dead_lettered_at=datetime.now(UTC),
                )
                await self.app.producer.send(self.settings.topics.dlq, msg.key, msg.value, None, None, letter.headers())
                self.metrics.skipped.labels(msg.topic, "invalid").inc()
        if len(out) < len(events):
            await self.app.producer.flush()
        return out

    @staticmethod
    def _spans(events: Sequence[faust.types.EventT]) -> list[tuple[int, int, int]]:
        return spans_of([(ev.message.partition, ev.message.offset) for ev in events])


def create_sink_app(settings: Settings, metrics: SinkMetrics | None = None) -> tuple[faust.App, SinkWorker]:
    conf = faust_settings(settings)
    conf["stream_buffer_maxsize"] = settings.sink_batch_records
    conf["broker_max_poll_records"] = settings.sink_batch_records
    app = CallpulseApp(settings.sink_app_id, **conf)
    app.configure_consumer([], settings.fetch_max_wait_ms, client_kwargs(settings))  # nothing bundled
    worker = SinkWorker(settings, app, metrics or SinkMetrics())
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    size, within = settings.sink_batch_records, settings.sink_flush_interval_s

    def events_agent(family: str) -> Any:
        async def sink_events(stream: faust.StreamT) -> None:
            async for batch in take_records(stream, size, within):
                await worker.write_events(family, batch)

        return sink_events

    for family, topic in settings.topics.inputs().items():
        channel = app.topic(topic, partitions=settings.partitions, **raw)
        app.agent(channel, name=f"callpulse.sink_{family}")(events_agent(family))

    @app.agent(app.topic(settings.topics.kpis, partitions=settings.partitions, **raw), name="callpulse.sink_kpis")
    async def sink_kpis(stream: faust.StreamT) -> None:
        async for batch in take_records(stream, size, within):
            await worker.write_kpis(batch)

    @app.agent(app.topic(settings.topics.warnings, partitions=1, **raw), name="callpulse.sink_warnings")
    async def sink_warnings(stream: faust.StreamT) -> None:
        async for batch in take_records(stream, size, within):
            await worker.write_warnings(batch)

    @app.agent(app.topic(settings.topics.staffing, partitions=1, **raw), name="callpulse.sink_staffing")
    async def sink_staffing(stream: faust.StreamT) -> None:
        async for batch in take_records(stream, size, within):
            await worker.write_staffing(batch)

    @app.task
    async def connect() -> None:
        await worker.sink.start()

    return app, worker
