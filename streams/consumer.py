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

Offsets stay exact: the bundle's message carries the offset of its last record, and faust's
consumer treats the offsets before it as a gap that is committed together with it - the same
mechanism faust uses for offsets taken by transaction markers and compaction. So the offset
moves past a bundle only when the agent acks the bundle, i.e. after its batch is durable, and
the engine still sees every record's own offset (its crash-safety marks, ``streams/sources.py``).

Everything else stays faust's: agents, tables and their changelogs, consumer groups,
rebalancing and recovery (changelog topics are never bundled).

**Fetch wait**: faust creates its aiokafka consumer with ``fetch_max_wait_ms=1500`` (fixed).
On the embedded broker a fetch that finds no new record then answers about 750 ms later even
when records arrive meanwhile (measured: a record produced 370 ms into such a fetch arrived
380 ms after it was produced; with 500 ms, within 10 ms), which was most of an event's latency
at live rates. ``CALLPULSE_FETCH_MAX_WAIT_MS`` sets it; the default is Kafka's own, 500 ms
(100 ms cost a third of the catch-up rate: the fetcher thread, which shares the interpreter
lock with the worker, then polls much more; ``docs/performance.md``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import faust
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers import aiokafka as aiokafka_driver
from mode.utils.aiter import aiter
from mode.utils.futures import notify

#: Records per bundle at most (a fetch may return more for one partition).
BUNDLE_MAX = 500


class RecordBundle:
    """The records of one partition from one fetch, in offset order."""

    __slots__ = ("records",)

    def __init__(self, records: Sequence[Any]) -> None:
        self.records = records

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


class ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """faust's thread around the aiokafka consumer, with the app's fetch wait."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust passes a fixed 1500; the fetcher reads this attribute when the consumer starts
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise RuntimeError("this aiokafka has no _fetch_max_wait_ms: CALLPULSE_FETCH_MAX_WAIT_MS cannot apply")
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms
        return consumer


class BundlingConsumer(aiokafka_driver.Consumer):
    """faust's aiokafka consumer, with the app's bulk topics fetched as bundles and the app's
    fetch wait."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        records, active = await super()._wait_next_records(timeout)
        topics = self.app.bundle_topics
        if records and topics:
            records = {tp: (bundle(rs, BUNDLE_MAX) if tp.topic in topics and rs else rs) for tp, rs in records.items()}
        return records, active


class BundlingTransport(aiokafka_driver.Transport):
    Consumer = BundlingConsumer


class CallpulseApp(faust.App):
    """A faust app whose consumer bundles the records of ``bundle_topics`` and waits at most
    ``fetch_max_wait_ms`` per fetch (``configure_consumer``, before start)."""

    bundle_topics: frozenset[str] = frozenset()
    fetch_max_wait_ms: int = 1500  # faust's own

    def configure_consumer(self, bundle_topics: Iterable[str], fetch_max_wait_ms: int) -> None:
        self.bundle_topics = frozenset(bundle_topics)
        self.fetch_max_wait_ms = fetch_max_wait_ms

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

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # acked below, after the caller handled the batch
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(full, timeout=within)
            if events:
                consuming = stream.loop.create_future()
                try:
                    yield list(events)
                finally:
                    batch, events[:] = list(events), []
                    counted = 0
                    for event in batch:
                        await stream.ack(event)
                    notify(consuming)
                    full.clear()
                    consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)
