"""Record bundles: one faust message per fetched run of records of a partition.

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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import faust
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers import aiokafka as aiokafka_driver


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


class BundlingConsumer(aiokafka_driver.Consumer):
    """faust's aiokafka consumer, with the app's bulk topics fetched as bundles."""

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        records, active = await super()._wait_next_records(timeout)
        topics: frozenset[str] = getattr(self.app, "bundle_topics", frozenset())
        limit: int = getattr(self.app, "bundle_max", 500)
        if records and topics:
            records = {tp: (bundle(rs, limit) if tp.topic in topics and rs else rs) for tp, rs in records.items()}
        return records, active


class BundlingTransport(aiokafka_driver.Transport):
    Consumer = BundlingConsumer


class BundlingApp(faust.App):
    """A faust app whose consumer bundles the records of ``bundle_topics`` (set before start)."""

    bundle_topics: frozenset[str] = frozenset()
    bundle_max: int = 500

    def bundle(self, topics: Iterable[str], limit: int) -> None:
        self.bundle_topics = frozenset(topics)
        self.bundle_max = max(1, limit)

    def _new_transport(self) -> Any:
        url = self.conf.broker_consumer[0]
        if url.scheme in ("kafka", "aiokafka"):
            return BundlingTransport(self.conf.broker_consumer, self)
        return super()._new_transport()
