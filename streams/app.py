"""The Faust application: agents, tables and the order in which results are made durable.

Agents
  * ``ingest``: one agent over every input topic. Takes batches of raw records (``take_records``
    of record bundles: one faust message per fetched run of a partition, ``streams.consumer``,
    so faust's per-message machinery runs per bundle, not per record), decodes them in bulk
    (``schemas.codec``), dead-letters what is bad, and feeds the KPI engine (stage 1, ``streams.engine``).
  * ``merge``: consumes stage-1 partial windows (one partition) and emits final records to
    ``cc.kpis`` (stage 2, ``streams.merge``).
  * a 1 s timer: the idle heartbeat (silence closes windows) and assignment changes.

State lives in plain changelog-backed tables written per batch (the table's local data and its
changelog topic, with an explicit partition: one write per changed key per batch, not per
event). Faust's windowed tables and ``on_window_close`` are not used: they close on wall-clock
time and forget windows restored after a rebalance (faust-streaming #250, #385, #118).

Order per batch (at-least-once; see ``streams/sources.py`` for why it is crash-safe):
dead letters + partial messages -> flush -> window entries -> flush -> entity facts -> flush ->
source metas -> flush -> acks (offsets are committed only after all of it is in Kafka; a batch
that raised or was cancelled is not acked). Writes go through ``streams.kafka.RecordBatches``:
one producer batch per topic partition, a flush waits for every batch's delivery.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import faust
import orjson

from callpulse.config import Settings
from schemas.codec import EventDecoder
from schemas.events import EventBase
from schemas.records import DeadLetter, DeadLetterReason
from sinks.metrics import WorkerMetrics
from streams.consumer import BUNDLE_MAX, CallpulseApp, records_of, take_records
from streams.early_warning.detector import EarlyWarningDetector
from streams.early_warning.rules import load_rules
from streams.engine import KpiEngine, State, messages_of, partial_records
from streams.kafka import RecordBatches, client_kwargs
from streams.kpis import epoch_s
from streams.merge import MergeParams, WindowMerger
from streams.pipeline import expected_sources, final_record
from streams.sources import EngineParams

log = logging.getLogger("callpulse.worker")

#: Partial records per merge batch.
MERGE_BATCH = 1000

#: (source message, original bytes, index in envelope, reason, error text)
Letter = tuple[Any, bytes, int | None, DeadLetterReason, str]


def faust_settings(settings: Settings) -> dict[str, Any]:
    """The faust settings of every callpulse app (worker and sink). Faust makes a folder per app
    even for memory tables: under the data dir, not the working directory (it makes only the
    last folder itself). A failing agent ends the process (``agent_supervisor``)."""
    folders = settings.data_dir / "faust"
    folders.mkdir(parents=True, exist_ok=True)
    return {
        "broker": settings.kafka_url(),
        "store": "memory://",
        "datadir": str(folders / "{conf.name}"),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": max(1.0, settings.session_timeout_s / 5),
        "producer_acks": -1,
        "table_standby_replicas": 0,
        "web_enabled": False,
        "autodiscover": False,
        # an agent that raises (a batch the broker did not take, a bug) ends the process, for the
        # orchestrator to start it again from the committed offsets and the changelogs; faust's
        # default restarts the agent in the same process, whose state has moved on without what
        # was lost (tests/test_kpi_stream.py: the pipeline stalled for good)
        "agent_supervisor": "mode.CrashingSupervisor",
        "stream_buffer_maxsize": max(4096, 4 * settings.batch_max),
        "broker_max_poll_records": max(500, settings.batch_max),
        "producer_max_request_size": 16 << 20,
        "consumer_max_fetch_size": 16 << 20,
    }


class KpiWorker:
    """Glue between Faust and the pure engine; one per worker process."""

    def __init__(self, settings: Settings, app: faust.App, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.app = app
        self.metrics = metrics
        inputs = settings.topics.inputs()
        self.input_topics = set(inputs.values())
        self.engine = KpiEngine(EngineParams.from_settings(settings), inputs)
        self.thresholds = tuple(settings.sl_thresholds_s)
        self.merger = self._new_merger()
        self.rules = load_rules(settings.warning_rules)
        self.detector = self._new_detector()
        self.decoders = {topic: EventDecoder(family, settings.max_future_skew_s) for family, topic in inputs.items()}
        self.lock = asyncio.Lock()
        self.restored: set[int] = set()
        self.merger_loaded = False
        self._batches: RecordBatches | None = None
        self._last_report = 0.0
        self._records_seen = 0
        self.gc = BatchGc(
            settings.gc_young_every_s,
            settings.gc_full_every_s,
            lambda generation, seconds: self.metrics.gc_pause.labels(str(generation)).observe(seconds),
        )

        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        # a channel queues bundles (streams/consumer.py): about four batches' worth of records
        queued = {"maxsize": max(16, 4 * -(-settings.batch_max // BUNDLE_MAX))}
        # one channel for every input topic: one agent, so a batch spans the topics and is
        # persisted once (four agents took turns on the engine, each persisting its own batches)
        self.inputs = app.topic(*inputs.values(), partitions=settings.partitions, **raw, **queued)
        self.partials = app.topic(settings.topics.partials, partitions=1, **raw, **queued)
        json_schema = faust.Schema(key_serializer="json", value_serializer="json")
        self.state = app.Table("callpulse-state", partitions=settings.partitions, schema=json_schema)
        self.merge_state = app.Table("callpulse-merge", partitions=1, schema=json_schema)

    def _new_merger(self) -> WindowMerger:
        s = self.settings
        params = MergeParams.from_settings(s)
        return WindowMerger(params, expected_sources(s.topics.inputs(), s.partitions))

    def _new_detector(self) -> EarlyWarningDetector:
        return EarlyWarningDetector.from_settings(self.settings, self.rules)

    # -- assignment ----------------------------------------------------------------------------
    def _recovered(self) -> bool:
        recovery = getattr(self.app.tables, "recovery", None)
        return recovery is None or recovery.completed.is_set()

    def _sync_assignment(self, now: float) -> None:
        """Drop revoked partitions; restore newly assigned ones from the table."""
        assigned = self.app.consumer.assignment()
        parts = {tp.partition for tp in assigned if tp.topic in self.input_topics}
        for p in self.restored - parts:
            self.engine.drop_partition(p)
            self.restored.discard(p)
        if not any(tp.topic == self.settings.topics.partials for tp in assigned):
            if self.merger_loaded:
                self.metrics.kpis.clear_merge_owned()
            self.merger_loaded = False
        if self._recovered():
            for p in sorted(parts - self.restored):
                self._restore(p, now)

    def _restore(self, partition: int, now: float) -> None:
        n = self.engine.restore(partition, list(self.state.data.items()), now)
        self.restored.add(partition)
        upto = {s.topic: s.upto for s in self.engine.shards[partition].values()}
        upto_json = orjson.dumps(upto).decode()
        log.info("partition %d: restored %d state entries; applied up to offsets %s", partition, n, upto_json)

    async def _batch(
        self,
        stage: str,
        work: Callable[[Sequence[faust.types.EventT]], Awaitable[None]],
        events: Sequence[faust.types.EventT],
    ) -> None:
        """Run one stage's batch under the worker's lock, timed, then collect garbage. The
        collection comes after ``work`` has returned: the batch's own objects (a merge batch's
        KPI records, tens of thousands in a catch-up) are freed by then, and it walks only the
        state that stays."""
        async with self.lock:
            started = time.perf_counter()
            await work(events)
            self.gc.after_batch()
            self.metrics.batch_seconds.labels(stage).observe(time.perf_counter() - started)

    # -- stage 1 -------------------------------------------------------------------------------
    async def process_batch(self, events: Sequence[faust.types.EventT]) -> None:
        await self._batch("ingest", self._ingest_batch, events)

    async def _ingest_batch(self, events: Sequence[faust.types.EventT]) -> None:
        """Stage 1's work on a batch of input records: decode, validate, per-partition KPI
        state, then its effects durable in dependency order."""
        now = time.time()
        dead: list[Letter] = []
        tally: Counter[tuple[str, str]] = Counter()  # (topic, outcome) -> events this batch
        for ev in events:
            self._ingest(records_of(ev.message), now, dead, tally)
        self._count(tally)
        self.engine.settle()
        await self._persist(dead, now)

    def _ingest(self, records: Sequence[Any], now: float, dead: list[Letter], tally: Counter[tuple[str, str]]) -> None:
        """Feed one partition's run of records (a bundle, or one message) to its source."""
        first = records[0]
        topic, p = first.topic, first.partition
        if p not in self.restored:
            self._restore(p, now)
        src = self.engine.source(topic, p)
        decode, watermark = self.decoders[topic].decode, self.decoders[topic].watermark
        replayed = accepted = duplicates = invalid = late = 0
        for msg in records:
            offset = msg.offset
            if offset <= src.upto:
                replayed += 1
                continue
            wm, bad_wm = watermark(msg.headers, msg.value, now)
            if wm is not None:
                src.watermark(offset, wm, now)
                continue
            if bad_wm is not None:
                dead.append((msg, bad_wm.raw, None, bad_wm.reason, bad_wm.error))
                invalid += 1
                continue
            good, bad = decode(msg.value, now)
            for b in bad:
                dead.append((msg, b.raw, b.index, b.reason, b.error))
            out = src.record(offset, good, now)
            accepted += out.accepted
            duplicates += out.duplicates
            invalid += len(bad)
            if out.late:
                late += len(out.late)
                dead.extend(self._late_letters(msg, out.late))
        for outcome, n in (
            ("record", len(records)),
            ("replayed", replayed),
            ("accepted", accepted),
            ("duplicate", duplicates),
            ("invalid", invalid),
            ("late", late),
        ):
            tally[(topic, outcome)] += n

    def _count(self, tally: Counter[tuple[str, str]]) -> None:
        for (topic, outcome), n in tally.items():
            if not n:
                continue
            if outcome == "record":
                self.metrics.records.labels(topic).inc(n)
                self._records_seen += n
            else:
                self.metrics.events.labels(topic, outcome).inc(n)

    def _late_letters(self, msg: Any, late: list[EventBase]) -> list[Letter]:
        """Dead letters for late events, with their original bytes (an envelope's item)."""
        grace = self.settings.grace_s
        out = []
        raw = msg.value or b""
        items: list[Any] | None = orjson.loads(raw) if raw.lstrip()[:1] == b"[" else None
        for e in late:
            why = f"event time {e.ts.isoformat()} is beyond the {grace}s grace of its window"
            if items is None:
                out.append((msg, raw, None, DeadLetterReason.late, why))
                continue
            idx = next(i for i, it in enumerate(items) if isinstance(it, dict) and it.get("event_id") == e.event_id)
            out.append((msg, orjson.dumps(items[idx]), idx, DeadLetterReason.late, why))
        return out

    async def _persist(self, dead: list[Letter], now: float) -> None:
        at = datetime.fromtimestamp(now, UTC)
        for msg, raw, index, reason, error in dead:
            letter = DeadLetter(
                source_topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                index=index,
                reason=reason,
                error=error,
                dead_lettered_at=at,
            )
            await self._send(self.settings.topics.dlq, msg.key, raw, None, letter.headers())
            self.metrics.dead_letters.labels(msg.topic, reason.value).inc()
        drained = self.engine.drain()
        for key, value in partial_records(drained.messages):
            await self._send(self.settings.topics.partials, key, value)
        await self._flush()
        await self._write_in_order(self.state, drained.groups())
        times = [s.st for s in self.engine.sources() if s.st is not None]
        if times:
            self.metrics.stream_time.set(min(times))

    async def _send(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None, headers: Any = None
    ) -> None:
        """Append a record to the output batches (``_flush`` waits for its delivery). Faust's
        buffered ``send_soon`` path moves records one by one, too slow for per-batch state, and
        a producer ``send`` per record was a tenth of the main thread (``RecordBatches``)."""
        await self._output().add(topic, key, value, partition, headers)

    async def _flush(self) -> None:
        """Every record sent so far is delivered (raises if one was not)."""
        await self._output().flush()

    def _output(self) -> RecordBatches:
        producer = self.app.producer._ensure_producer()  # the aiokafka producer faust started
        if self._batches is None or self._batches.producer is not producer:
            self._batches = RecordBatches(producer)
        return self._batches

    async def _write_in_order(self, table: Any, groups: Iterable[dict[tuple[int, str], State]]) -> None:
        """Make each group of table entries durable before the next one is sent: the persist
        order the restart logic relies on (``docs/architecture.md``)."""
        for entries in groups:
            if entries:
                await self._write(table, entries)
                await self._flush()

    async def _write(self, table: Any, entries: dict[tuple[int, str], State]) -> None:
        """Write table entries to the local store and the changelog, JSON-encoded as the
        table's codec reads them back on recovery (None = tombstone)."""
        topic = table.changelog_topic.get_topic_name()
        add = self._output().add  # once per batch, not per entry (most of the worker's writes)
        for (partition, key), value in entries.items():
            if value is None:
                table.data.pop(key, None)
                await add(topic, orjson.dumps(key), None, partition)
            else:
                table.data[key] = value
                await add(topic, orjson.dumps(key), orjson.dumps(value), partition)

    async def heartbeat(self) -> None:
        async with self.lock:
            now = time.time()
            self._sync_assignment(now)
            self.engine.tick(now)
            await self._persist([], now)
            self.metrics.kpis.update_live(self.engine.live())
            self._lag()
            if now - self._last_report >= 10:
                self._report(now)
            self.gc.after_batch()  # an idle worker collects too: the trigger is off

    def _lag(self) -> None:
        consumer = self.app.consumer
        read = getattr(consumer, "_read_offset", {})
        for tp in consumer.assignment():
            if tp.topic in self.input_topics:
                high, pos = consumer.highwater(tp), read.get(tp)
                if high is not None:
                    lag = max(0, high - ((pos or -1) + 1))
                    self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    def _report(self, now: float) -> None:
        """One progress line every 10 s: what an operator greps for first."""
        self._last_report = now
        times = [s.st for s in self.engine.sources() if s.st is not None]
        m = self.merger
        consumer = self.app.consumer
        read = getattr(consumer, "_read_offset", {})
        ours = [
            tp
            for tp in sorted(consumer.assignment())
            if tp.topic in self.input_topics or tp.topic == self.settings.topics.partials
        ]
        name = {tp: f"{tp.topic.rsplit('.', 1)[-1]}:{tp.partition}" for tp in ours}
        offsets = {name[tp]: (read.get(tp), consumer.highwater(tp)) for tp in ours}
        # partitions faust does not fetch now: paused (rebalance, recovery) or its buffer full
        active = getattr(consumer, "_active_partitions", None) or set()
        paused = getattr(consumer, "_paused_partitions", set())
        buffered = getattr(consumer, "_buffered_partitions", set())
        idle = {
            name[tp]: "paused" if tp in paused else "buffer full" if tp in buffered else "inactive"
            for tp in ours
            if tp not in active
        }
        log.info(
            "progress: records=%d partitions=%s min_stream_time=%s merger_loaded=%s next_window=%s "
            "sources_reporting=%d/%d pending_windows=%d read/highwater=%s not_fetching=%s",
            self._records_seen,
            sorted(self.restored),
            min(times) if times else None,
            self.merger_loaded,
            m.s.next_window,
            len(m.s.closed),
            len(m.expected),
            len(m.s.pending),
            offsets,
            idle,
        )

    def _publish_kpis(self, records: list[Any]) -> None:
        """Gauges from the rolling windows and open warnings (this worker owns the merge stage)."""
        now = time.time()
        base = self.settings.base_window_s
        for r in records:
            if r.window_size_s == base and r.dimension == "all":
                self.metrics.emit_delay.observe(max(0.0, now - epoch_s(r.window_end)))
        self.metrics.kpis.update_rolling(self.detector)
        self.metrics.kpis.update_warnings(self.detector.tracker.open_warnings())
        self.metrics.kpis.update_staffing(self.detector)

    # -- stage 2 -------------------------------------------------------------------------------
    async def merge_batch(self, events: Sequence[faust.types.EventT]) -> None:
        await self._batch("merge", self._merge, events)

    async def _merge(self, events: Sequence[faust.types.EventT]) -> None:
        """Stage 2's work on a batch of partial records: final windows, records, warnings,
        staffing intervals, then the merge state in dependency order."""
        if not self.merger_loaded:
            items = list(self.merge_state.data.items())
            self.merger = self._new_merger()
            self.merger.load_state([(k, v) for k, v in items if not EarlyWarningDetector.owns(k)])
            self.detector = self._new_detector()
            self.detector.load_state([(k, v) for k, v in items if EarlyWarningDetector.owns(k)])
            self.merger_loaded = True
        for ev in events:
            for rec in records_of(ev.message):
                for m in messages_of(rec.value):
                    self.merger.on_message(m)
        finals = self.merger.finalize()
        variant = self.settings.sl_default_variant
        records = [final_record(fw, self.thresholds, variant) for fw in finals]
        add, kpis = self._output().add, self.settings.topics.kpis
        for rec in records:
            await add(kpis, rec.key().encode(), rec.to_json())
        for size, n in Counter(rec.window_size_s for rec in records).items():
            self.metrics.kpi_records.labels(str(size)).inc(n)
        for w in self.detector.observe(records):
            await self._send(self.settings.topics.warnings, w.warning_id.encode(), w.model_dump_json().encode())
            self.metrics.warning_changes.labels(w.rule, w.change).inc()
        for st in self.detector.drain_staffing():
            await self._send(self.settings.topics.staffing, st.key().encode(), st.model_dump_json().encode())
        await self._flush()
        if records:
            self._publish_kpis(records)
        if self.merger.s.next_window is not None:
            self.merger.prune_history(self.merger.s.next_window)
        groups = WindowMerger.persist_groups(self.merger.drain_state())
        groups[0].update(self.detector.drain_state())  # before the meta, deletions included
        await self._write_in_order(self.merge_state, [{(0, k): v for k, v in g.items()} for g in groups])


def tune_gc(settings: Settings) -> None:
    """Fewer cyclic garbage collections where Python's own trigger stays on (in-process runs and
    benchmarks; the worker replaces the trigger, ``BatchGc``): the engine allocates millions of
    small dicts and lists that reference counting frees (no cycles), and Python's default (a
    young-generation pass every 700 net allocations, each older pass walking the whole state)
    cost a third of the engine's time (docs/performance.md). Objects alive at start-up are frozen
    out of the scans; older generations keep their default ratios, so cycles are still collected."""
    if settings.gc_gen0_threshold:
        gc.freeze()
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(settings.gc_gen0_threshold, gen1, gen2)


class BatchGc:
    """The worker's cyclic garbage collection: between batches, on its own clock.

    The engine's state (facts, partials, dedup ids: millions of containers) is long-lived, and
    its garbage is freed by reference counting: it makes no cycles (a young collection after
    every batch of the 100,000 events of the engine benchmark found none). Python's trigger
    collects every ``gc_gen0_threshold`` net allocations and promotes what survives, so young
    state was walked two or three times, and older passes stalled the worker (0.4-0.5 s every
    half minute at a live 10,000 events/s). ``start`` turns that trigger off; ``after_batch``
    (after every batch and heartbeat) then

    * collects the young generations when ``young_every_s`` has passed since the last time and
      freezes what survived (``gc.freeze``: later passes skip it; reference counting still frees
      it as usual): state created and dropped in between is never walked at all;
    * every ``full_every_s`` unfreezes everything and runs a full collection (logged, with what
      it found), so a cycle that dies after being frozen waits no longer than that.

    Every pause, whoever started it, is observed by ``observe(generation, seconds)``
    (``callpulse_gc_pause_seconds``). ``full_every_s`` 0: Python's generations alone, no freezing;
    ``young_every_s`` 0: Python's trigger stays on and every batch ends with a young collection.
    """

    def __init__(
        self, young_every_s: float, full_every_s: float, observe: Callable[[int, float], None] | None = None
    ) -> None:
        self.young_every_s = young_every_s
        self.full_every_s = full_every_s
        self.last_full = self.last_young = time.monotonic()
        self._observe = observe
        self._started_at = 0.0

    def start(self) -> None:
        """Take over from Python's trigger (in the worker process, once, before its loop)."""
        if self._observe is not None:
            gc.callbacks.append(self._pause)
        if self.full_every_s and self.young_every_s:
            gc.freeze()  # start-up objects
            gc.disable()

    def _pause(self, phase: str, info: dict[str, int]) -> None:
        """A ``gc.callbacks`` hook (installed by ``start`` only with an ``observe``)."""
        if phase == "start":
            self._started_at = time.perf_counter()
        else:
            self._observe(info["generation"], time.perf_counter() - self._started_at)  # type: ignore[misc]

    def after_batch(self) -> None:
        if not self.full_every_s:
            return
        now = time.monotonic()
        if now - self.last_full >= self.full_every_s:
            self.last_full = self.last_young = now
            frozen = gc.get_freeze_count()
            gc.unfreeze()
            started = time.perf_counter()
            found = gc.collect()
            log.info(
                "full garbage collection: %d unreachable objects among %d frozen, %.3f s",
                found,
                frozen,
                time.perf_counter() - started,
            )
        elif now - self.last_young >= self.young_every_s:
            self.last_young = now
            gc.collect(1)
        else:
            return
        gc.freeze()


def create_app(settings: Settings, metrics: WorkerMetrics | None = None) -> tuple[faust.App, KpiWorker]:
    app = CallpulseApp(settings.app_id, **faust_settings(settings))
    worker = KpiWorker(settings, app, metrics or WorkerMetrics(thresholds=settings.sl_thresholds_s))
    # Input and partial records reach the agents in bundles of up to BUNDLE_MAX (streams/consumer.py);
    # a batch holds up to ``batch_max`` records, or what arrived within ``batch_within_s``.
    app.configure_consumer(
        [*worker.input_topics, settings.topics.partials], settings.fetch_max_wait_ms, client_kwargs(settings)
    )

    @app.agent(worker.inputs, name="callpulse.ingest")
    async def ingest(stream: faust.StreamT) -> None:
        async for batch in take_records(stream, settings.batch_max, settings.batch_within_s):
            await worker.process_batch(batch)

    @app.agent(worker.partials, name="callpulse.merge")
    async def merge(stream: faust.StreamT) -> None:
        async for batch in take_records(stream, MERGE_BATCH, 0.5):
            await worker.merge_batch(batch)

    @app.timer(1.0)
    async def heartbeat() -> None:
        await worker.heartbeat()

    return app, worker
