"""callpulse's faust consumer: record bundles, and a fetch wait fit for live latency.

**Record bundles**: one faust message per fetched run of records of a partition.

Faust hands every Kafka record through its per-message machinery (the consumer's drain loop
awaits each one as a task pair, the conductor decodes and queues it, the stream iterates,
sensors and acks it): about 150-200 us of CPU per record on the benchmark machine, which caps a
worker reading one event per record at 5,000-6,000 records/s whatever the processing does
(``docs/performance.md``). callpulse's agents take records in batches anyway, so for the topics
it reads in bulk (the input topics and the partials topic) the consumer passes each partition's
run of fetched records as **one** faust message whose value is a ``RecordBundle`` of the
original aiokafka records, each with its own offset, key, headers and bytes.

Offsets stay exact: the bundle's message carries the offset of its last record, and when the
agent acks the bundle (after its batch is durable) the consumer registers the offsets before it
as a *gap* of faust's, committed together with it - the mechanism faust uses for offsets taken
by transaction markers and compaction. The engine still sees every record's own offset (its
crash-safety marks, ``streams/sources.py``). Three rules of faust's are replaced for this:

* A bundle's gap is registered when it is **acked, not when it is delivered**. Registered at
  delivery, the gaps of bundles faust delivered and then dropped from its queue (a recovery or a
  rebalance suspends the flow and clears it), read again after a seek in bundles of other
  bounds, overlapped the new gaps and merged into one across the dropped bundles' offsets; the
  next commits then covered records never handled (the restart test: a partition committed at
  7134 with its state at 2831, the worker's log showing 2832 committed, then 7134 with no ack in
  between; ``tests/test_consumer.py`` replays it). Now only handled offsets are ever counted.
* The offsets between two bundles read one after the other that hold no record are the later
  bundle's (``delivered``); faust infers such gaps from its read offset, but not after offset 0
  (``if gap > 1 and r_offset``: a partition whose first fetch returned just its record 0 never
  committed past 1, seen in CI), and after a seek it takes the offsets before a message as
  empty when they are only unread.
* faust's inferred gap before a message includes the message's own offset; acked, it was then
  listed twice, and faust's commit, which takes the first run of consecutive acked offsets,
  stopped at the duplicate: the committed offset moved one bundle per commit (2.8 s) however
  many were handled (a catch-up of 100,000 single-event records left 44,963 uncommitted;
  ``benchmarks/bench_kpi_engine.py``, ``docs/architecture.md``).

Everything else stays faust's: agents, tables and their changelogs, consumer groups,
rebalancing and recovery (changelog topics are never bundled).

**Only handled messages are acked**: faust's pure-Python stream iterator (``NO_CYTHON``, or a
faust built without its extension) acks a message it *skips*, whatever the stream's ack
setting: one read once the flow is suspended (a worker stopping, a rebalance starting) or of an
earlier consumer generation, which no agent ever sees. Its offsets, and through the bundles'
gaps those of the records before it, were then committed unread (three bundles, the first
handled while the flow stopped: offset 300 committed instead of 100, ``tests/test_consumer.py``);
faust's compiled iterator does not ack them. In an app of this module (the KPI worker and the
ClickHouse sink) a message counts as acked only when ``take_records`` acks it after its batch
was handled; any other ack untracks the message without making its offsets committable, so
they are read again by whoever owns the partition next.

**Fetch wait**: faust creates its aiokafka consumer with ``fetch_max_wait_ms=1500`` (fixed).
On the embedded broker a fetch that finds no new record then answers about 750 ms later even
when records arrive meanwhile (measured: a record produced 370 ms into such a fetch arrived
380 ms after it was produced; with 500 ms, within 10 ms), which was most of an event's latency
at live rates. ``CALLPULSE_FETCH_MAX_WAIT_MS`` sets it; the default is Kafka's own, 500 ms
(100 ms cost a third of the catch-up rate: the fetcher thread, which shares the interpreter
lock with the worker, then polls much more; ``docs/performance.md``).

**Changelog ends**: faust recovers a table by reading its changelog up to the end offsets the
broker reports (ListOffsets, latest). The embedded broker (Tansu) reports a partition's end as
the base offset of its last record batch plus one, not the offset after its last record
(measured: batches of 3, 3 and 3 records end at 7 instead of 9). The records of that last batch
were then read or not depending on how faust's fetches fell: a restarted worker could come back
without the last entries it had persisted - after a graceful stop, the source metas of its last
batch - while the input offsets were already committed past them. The consumer therefore takes
each end from a fetch's high watermark (``fetched_ends``), which the broker reports exactly, and
never less than the ListOffsets answer; on Apache Kafka the two agree.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types.tuples import ack_lock
from intervaltree import IntervalTree
from mode.utils.aiter import aiter
from mode.utils.futures import notify

log = logging.getLogger("callpulse.consumer")

#: Records per bundle at most (a fetch may return more for one partition).
BUNDLE_MAX = 500

#: Set while ``take_records`` acks the events of a batch its caller handled: the one ack the
#: consumer takes for a topic with acks (a context variable: faust's skip-acks run in the
#: stream's own draining task, never inside this one).
_acking_handled: ContextVar[bool] = ContextVar("callpulse_acking_handled", default=False)


class RecordBundle:
    """The records of one partition from one fetch, in offset order. ``gap_from``: the first
    offset the bundle's message accounts for once acked (its first record's, or lower when
    offsets before it hold no record, e.g. transaction markers); set as it is delivered."""

    __slots__ = ("gap_from", "records")

    def __init__(self, records: Sequence[Any]) -> None:
        self.records = records
        self.gap_from: int = records[0].offset

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        first, last = self.records[0], self.records[-1]
        return f"<RecordBundle {first.topic}[{first.partition}] {first.offset}..{last.offset}>"


def records_of(message: Any) -> Sequence[Any]:
    """The Kafka records a faust message stands for: a bundle's records, or the message itself
    (each has ``topic``, ``partition``, ``offset``, ``key``, ``value`` and ``headers``)."""
    value = message.value
    return value.records if isinstance(value, RecordBundle) else (message,)


def bundle(records: Sequence[ConsumerRecord], limit: int) -> list[ConsumerRecord]:
    """Stand-in records for a partition's fetched records: one per ``limit`` records, with the
    offset and timestamp of its last record and the records as a ``RecordBundle`` value."""
    out = []
    for i in range(0, len(records), limit):
        part = records[i : i + limit]
        last = part[-1]
        out.append(
            ConsumerRecord(
                topic=last.topic,
                partition=last.partition,
                offset=last.offset,
                timestamp=last.timestamp,
                timestamp_type=last.timestamp_type,
                key=None,
                value=RecordBundle(part),  # type: ignore[arg-type]
                checksum=None,
                serialized_key_size=0,
                serialized_value_size=sum(r.serialized_value_size for r in part),
                headers=(),
            )
        )
    return out


async def fetched_ends(
    client: dict[str, Any], reported: Mapping[Any, int | None], timeout_s: float = 30.0
) -> dict[Any, int | None]:
    """Each partition's end offset as a fetch's high watermark gives it, never below the
    ``reported`` (ListOffsets) one: a group-less consumer fetches from the reported end of each
    partition and reads the high watermark of the answer (Tansu's ListOffsets stops at the last
    record batch's base offset; see the module docstring). Fails loudly rather than let a table
    recover short."""
    tps = {TopicPartition(tp.topic, tp.partition): tp for tp, end in reported.items() if end is not None}
    if not tps:
        return dict(reported)
    consumer = AIOKafkaConsumer(**client, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        consumer.assign(list(tps))
        for tp, orig in tps.items():
            consumer.seek(tp, reported[orig])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while missing := [tp for tp in tps if consumer.highwater(tp) is None]:
            if loop.time() > deadline:
                raise RuntimeError(f"no fetch answer for {missing} in {timeout_s}s: changelog end unknown")
            await consumer.getmany(*missing, timeout_ms=100)
        out = dict(reported)
        for tp, orig in tps.items():
            out[orig] = max(reported[orig] or 0, consumer.highwater(tp))
        return out
    finally:
        await consumer.stop()


def add_gap(gaps: IntervalTree, begin: int, end: int) -> None:
    """Add the offsets ``[begin, end)`` to a partition's gaps, merged with the gaps they overlap:
    what faust's ``addi`` then ``merge_overlaps()`` leave, without rebuilding the whole tree.

    faust rebuilds a partition's tree on every gap it adds; a bundle adds one (two with faust's
    own inference) and the tree holds every gap since the last commit, which made it a tenth of
    a catch-up's CPU (``docs/performance.md``). Only strictly overlapping gaps merge, as in
    faust: touching ones stay apart, because faust's commit takes a gap whole once an acked
    offset lies past its start, and a bundle's gap merged with the next bundle's would commit
    the next bundle before it is acked.
    """
    overlapping = gaps.overlap(begin, end)
    for gap in overlapping:
        begin = min(begin, gap.begin)
        end = max(end, gap.end)
        gaps.remove(gap)
    gaps.addi(begin, end)


class ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """faust's thread around the aiokafka consumer, with the app's fetch wait and exact
    changelog ends."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust passes a fixed 1500; the fetcher reads this attribute when the consumer starts
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise RuntimeError("this aiokafka has no _fetch_max_wait_ms: CALLPULSE_FETCH_MAX_WAIT_MS cannot apply")
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms
        return consumer

    async def _highwaters(self, partitions: list[Any]) -> Mapping[Any, int]:
        """The ends table recovery reads up to (faust asks for nothing else): exact, from a fetch."""
        reported = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return reported
        client = self.app.client_kwargs
        if client is None:
            raise RuntimeError("CallpulseApp.configure_consumer was not called: no connection for the changelog ends")
        return await fetched_ends(client, reported)  # type: ignore[return-value]


class BundlingConsumer(aiokafka_driver.Consumer):
    """faust's aiokafka consumer, with the app's bulk topics fetched as bundles and the app's
    fetch wait."""

    #: Messages acked by faust without an agent having handled them (``ack``).
    skipped_unhandled = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_delivered: dict[Any, int] = {}  # partition -> last offset delivered (``delivered``)

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        """faust's hook for the offsets between the message read before and this one (at
        ``offset_to``), called by its drain loop as a message is delivered. For bundled topics
        nothing: a bundle's offsets are registered when it is acked (``ack``). Otherwise the gap
        ends *before* the message: faust's own ``Consumer._add_gap`` (0.15) puts the message's
        offset in it too, so once acked that offset was in faust's list of acked offsets twice,
        and its commit, which takes the first run of consecutive offsets, stopped at the
        duplicate (with bundles: one bundle per commit, module docstring)."""
        if tp.topic not in self.app.bundle_topics:
            self._register_gap(tp, offset_from, offset_to)

    def _register_gap(self, tp: Any, begin: int, end: int) -> None:
        """The offsets ``[begin, end)`` are committed with the next offset acked after them (none
        at or below the committed offset, as in faust)."""
        committed = self._committed_offset[tp]
        if committed is not None:
            begin = max(begin, committed + 1)
        if begin < end:
            add_gap(self._gap[tp], begin, end)

    def ack(self, message: Any) -> bool:
        """faust's ack for a message ``take_records`` acks after its batch was handled, a
        bundle's other offsets registered with it; any other ack of a message with acks (faust's
        for a message its stream skipped) untracks it without making its offsets committable
        (module docstring)."""
        if not self.app.topics.acks_enabled_for(message.topic):
            return super().ack(message)
        if _acking_handled.get():
            value = message.value
            if isinstance(value, RecordBundle):
                self._register_gap(message.tp, value.gap_from, message.offset)
            return super().ack(message)
        with ack_lock:
            if message.acked:
                return False
            message.acked = True  # nothing more to wait for (``wait_empty``), nothing to commit
            self._unacked_messages.discard(message)
            notify(self._waiting_for_ack)
        self.skipped_unhandled += 1
        log.info("not committing %s[%d] @%d: skipped by its stream, never handled", *message.tp, message.offset)
        return False

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        """faust's messages, each bundle told where its offsets begin (``delivered``)."""
        async for tp, message in super().getmany(timeout):
            if isinstance(message.value, RecordBundle):
                self.delivered(tp, message.value)
            yield tp, message

    def delivered(self, tp: Any, bundle: RecordBundle) -> None:
        """A bundle accounts, once acked, also for the offsets between the offset read before it
        and its first record, which hold no record (transaction markers, compaction, records
        past retention), as faust's gaps do for single messages: after the bundle delivered
        before it, or after where the assignment's seek put the partition. Not when faust's read
        offset moved under earlier deliveries (a seek while bundles read before it are still
        being delivered): the offsets before such a bundle are unread, not empty."""
        read, last = self._read_offset.get(tp), self._last_delivered.get(tp)
        if read is not None and (last is None or read == last) and read + 1 < bundle.gap_from:
            bundle.gap_from = read + 1
        self._last_delivered[tp] = bundle.records[-1].offset

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self._last_delivered.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        records, active = await super()._wait_next_records(timeout)
        topics = self.app.bundle_topics
        if records and topics:
            records = {tp: (bundle(rs, BUNDLE_MAX) if tp.topic in topics and rs else rs) for tp, rs in records.items()}
        return records, active


class BundlingTransport(aiokafka_driver.Transport):
    Consumer = BundlingConsumer


class CallpulseApp(faust.App):
    """A faust app whose consumer bundles the records of ``bundle_topics``, waits at most
    ``fetch_max_wait_ms`` per fetch and learns changelog ends from a fetch made with the
    ``client`` connection settings (``configure_consumer``, before start)."""

    bundle_topics: frozenset[str] = frozenset()
    fetch_max_wait_ms: int = 1500  # faust's own
    client_kwargs: dict[str, Any] | None = None  # aiokafka connection (``streams.kafka.client_kwargs``)

    def configure_consumer(self, bundle_topics: Iterable[str], fetch_max_wait_ms: int, client: dict[str, Any]) -> None:
        self.bundle_topics = frozenset(bundle_topics)
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.client_kwargs = client

    def _new_transport(self) -> Any:
        url = self.conf.broker_consumer[0]
        if url.scheme in ("kafka", "aiokafka"):
            return BundlingTransport(self.conf.broker_consumer, self)
        return super()._new_transport()


def take_records(stream: Any, max_records: int, within: float) -> AsyncIterator[list[Any]]:
    """Batches of a stream's events holding up to ``max_records`` Kafka records, or what arrived
    within ``within`` seconds: faust's ``Stream.take_events`` (faust-streaming 0.15), counting a
    bundle as its records instead of as one message. Counting messages, a live stream (small
    bundles, a few records each) made a batch of a few records, and the worker spent its time
    persisting batches. Events are acked after the caller has handled the batch."""
    batches = _take_records(stream, max_records, within)
    active = getattr(stream, "_active_agens", None)
    if active is not None:  # faust closes a stream's buffering generators when it stops
        active.add(batches)
    return batches


async def _take_records(stream: Any, max_records: int, within: float) -> AsyncIterator[list[Any]]:
    events: list[Any] = []
    counted = 0
    full = asyncio.Event()
    consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming, counted
        try:
            if consuming is not None:
                try:
                    await consuming
                finally:
                    consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("take_records found current_event is None")
            events.append(event)
            counted += len(records_of(event.message))
            if counted >= max_records:
                full.set()
                consumed.clear()
                await stream.wait(consumed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    # Acked below, after the caller handled the batch, and never by the stream itself, also not
    # after this generator is closed. faust's ``take`` turns the stream's acks back on when it
    # closes: a stopping worker's stream would then ack messages still buffered in its channel
    # (not yet tracked, so faust's ``wait_empty`` does not wait for them) that no agent handled,
    # and the consumer's last commit could move past them.
    stream.enable_acks = False
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(full, timeout=within)
            if events:
                consuming = stream.loop.create_future()
                handled = False
                try:
                    yield list(events)
                    handled = True  # the caller asked for the next batch: it is done with this one
                finally:
                    batch, events[:] = list(events), []
                    counted = 0
                    # Not when the caller failed or was cancelled (a worker stopping mid-batch):
                    # faust would commit offsets past records whose state never reached Kafka.
                    # Unacked, they are read again after a restart.
                    if handled:
                        token = _acking_handled.set(True)
                        try:
                            for event in batch:
                                await stream.ack(event)
                        finally:
                            _acking_handled.reset(token)
                    notify(consuming)
                    full.clear()
                    consumed.set()
    finally:
        stream._processors.remove(add_to_buffer)
