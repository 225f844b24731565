"""Kafka at the edge: topic creation and an event producer (aiokafka).

Producers key every record by its entity id (``schemas.events.entity_key``) so that a contact's
calls and surveys, a ticket's events and an agent's states each stay in one partition, in order.
Envelopes group events of one partition into a single record.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.producer.message_accumulator import BatchBuilder

from callpulse.config import Settings
from schemas.codec import watermark_headers
from schemas.events import EventBase, entity_key
from streams.partitioning import partition_for

# Tansu reports topic configs only when set explicitly; Apache Kafka accepts them as well.
TOPIC_CONFIG = {"retention.ms": str(7 * 86_400_000), "retention.bytes": "-1"}


def client_kwargs(settings: Settings) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap(),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        kw["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kw["sasl_plain_username"] = settings.kafka_sasl_username
        kw["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        )
    return kw


def topic_plan(settings: Settings) -> dict[str, int]:
    """Every topic callpulse owns and its partition count."""
    t = settings.topics
    plan = {name: settings.partitions for name in t.inputs().values()}
    plan.update({t.kpis: settings.partitions, t.warnings: 1, t.staffing: 1, t.dlq: settings.partitions, t.partials: 1})
    return plan


async def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create missing topics; fail loudly if an input topic has another partition count (the
    co-partitioning of contacts and their surveys depends on it)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        plan = topic_plan(settings)
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, n, settings.replication_factor, topic_configs=TOPIC_CONFIG)
            for name, n in plan.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        described = await admin.describe_topics(list(settings.topics.inputs().values()))
        for d in described:
            n = len(d.get("partitions", []))
            if n and n != settings.partitions:
                raise RuntimeError(
                    f"topic {d['topic']} has {n} partitions but CALLPULSE_PARTITIONS={settings.partitions}: "
                    "all input topics must have the same partition count"
                )
        return plan
    finally:
        await admin.close()


class EventProducer:
    """Produces callpulse events, single or in envelopes, and watermarks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = AIOKafkaProducer(
            **client_kwargs(settings), acks="all", linger_ms=5, max_batch_size=1 << 20, max_request_size=8 << 20
        )

    async def __aenter__(self) -> EventProducer:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    def topic(self, family: str) -> str:
        return self.settings.topics.inputs()[family]

    async def send_events(self, items: Iterable[tuple[str, EventBase]], envelope: int = 1) -> int:
        """Produce events in order. ``envelope`` > 1 packs up to that many consecutive events of
        the same topic partition into one record (order within the partition is kept)."""
        n = 0
        futures = []
        pending: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        parts = self.settings.partitions
        for family, event in items:
            key = entity_key(family, event)
            body = event.model_dump_json(exclude_defaults=False).encode()
            n += 1
            if envelope <= 1:
                futures.append(await self.producer.send(self.topic(family), body, key=key.encode()))
                continue
            tp = (family, partition_for(key, parts))
            pending[tp].append(body)
            if len(pending[tp]) >= envelope:
                futures.append(await self._send_envelope(tp, pending.pop(tp)))
        for tp, bodies in pending.items():
            futures.append(await self._send_envelope(tp, bodies))
        await self.producer.flush()
        await asyncio.gather(*futures)
        return n

    async def _send_envelope(self, tp: tuple[str, int], bodies: list[bytes]) -> Any:
        value = b"[" + b",".join(bodies) + b"]"
        return await self.producer.send(self.topic(tp[0]), value, partition=tp[1])

    async def send_raw(
        self, family: str, value: bytes | None, key: bytes | None = None, partition: int | None = None
    ) -> None:
        await (await self.producer.send(self.topic(family), value, key=key, partition=partition))

    async def send_watermarks(self, ts: float, families: Iterable[str] | None = None) -> None:
        """Tell every partition of the input topics that event time has reached ``ts``."""
        futures = []
        for family in families or self.settings.topics.inputs():
            for p in range(self.settings.partitions):
                futures.append(
                    await self.producer.send(self.topic(family), b"", partition=p, headers=watermark_headers(ts))
                )
        await self.producer.flush()
        await asyncio.gather(*futures)

    async def replay(
        self,
        items: list[tuple[str, EventBase]],
        speed: float,
        envelope: int = 50,
        on_tick: Callable[[float], Awaitable[bool]] | None = None,
        watermark_every_s: float = 30.0,
    ) -> int:
        """Produce time-ordered events paced by their event time: ``speed`` simulated seconds per
        wall second (60 = an hour per minute). Watermarks every ``watermark_every_s`` of event
        time let quiet partitions close their windows. ``on_tick(event_time)`` runs between
        steps; returning False stops the replay. Returns the number of events sent."""
        if not items:
            return 0
        loop = asyncio.get_running_loop()
        t0, wall0 = items[0][1].ts.timestamp(), loop.time()
        end = items[-1][1].ts.timestamp()
        i, last_watermark = 0, t0
        while True:
            now = t0 + (loop.time() - wall0) * speed
            chunk = []
            while i < len(items) and items[i][1].ts.timestamp() <= now:
                chunk.append(items[i])
                i += 1
            if chunk:
                await self.send_events(chunk, envelope)
            if now - last_watermark >= watermark_every_s:
                await self.send_watermarks(min(now, end) - 1)
                last_watermark = now
            if on_tick is not None and not await on_tick(min(now, end)):
                return i
            if i >= len(items):
                return i
            if on_tick is None:
                await asyncio.sleep(0.2)


class RecordBatches:
    """A worker's output records (changelog entries, partials, KPI records), appended to one
    aiokafka batch per topic partition (``create_batch`` / ``send_batch``) instead of a ``send``
    each.

    A ``send`` costs a future, a metadata wait, a partitioner call and faust's wrapper per record:
    about a tenth of the worker's main thread (py-spy, ``docs/performance.md``) for the roughly
    one record it writes per input event. A batch goes to the producer when it is full and at
    ``flush``, which waits for the delivery of every batch and raises if one failed, so that a
    failed write stops the worker before it commits offsets past it. A record without a
    partition goes where ``send`` would put it: Kafka's default partitioner (murmur2 of the key;
    a random partition for no key)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._open: dict[tuple[str, int], BatchBuilder] = {}
        self._submitted: list[asyncio.Future[Any]] = []
        self._partitions: dict[str, list[int]] = {}

    async def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        if partition is None:
            partition = await self.partition_of(topic, key)
        tp = (topic, partition)
        headers = headers or []
        batch = self._open.get(tp)
        if batch is None:
            batch = self._open[tp] = self.producer.create_batch()
        if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:  # full
            await self._submit(tp, batch)
            batch = self._open[tp] = self.producer.create_batch()
            batch.append(timestamp=None, key=key, value=value, headers=headers)  # a first record always fits

    async def partition_of(self, topic: str, key: bytes | None) -> int:
        """Kafka's default partitioner, as aiokafka's ``DefaultPartitioner`` applies it."""
        parts = self._partitions.get(topic)
        if parts is None:
            parts = self._partitions[topic] = sorted(await self.producer.partitions_for(topic))
        return random.choice(parts) if key is None else parts[partition_for(key, len(parts))]

    async def _submit(self, tp: tuple[str, int], batch: BatchBuilder) -> None:
        self._submitted.append(await self.producer.send_batch(batch, tp[0], partition=tp[1]))

    async def flush(self) -> None:
        """Hand every open batch to the producer and wait until all are delivered (in order
        within a partition: a partition's batches are submitted in the order they filled)."""
        open_batches, self._open = self._open, {}  # never submitted twice, even if cancelled here
        for tp, batch in open_batches.items():
            await self._submit(tp, batch)
        submitted, self._submitted = self._submitted, []
        await asyncio.gather(*submitted)
