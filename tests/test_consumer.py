"""callpulse's faust consumer (``streams/consumer.py``): records reach the agents in bundles, and
the offsets committed for a bundle cover every record in it, on the real broker."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from callpulse.config import Settings
from callpulse.simulator import SimConfig, simulate
from schemas.events import entity_key
from streams.app import create_app
from streams.consumer import RecordBundle, bundle, records_of
from streams.kafka import EventProducer, client_kwargs
from streams.partitioning import partition_for


def record(offset: int) -> ConsumerRecord:
    return ConsumerRecord("cc.calls", 2, offset, 1000 + offset, 0, b"k", b"{}", None, 1, 2, [])


def test_a_partitions_fetched_records_become_bundles_of_at_most_the_limit() -> None:
    records = [record(o) for o in range(10, 22)]  # 12 records
    stand_ins = bundle(records, 5)
    assert [len(s.value) for s in stand_ins] == [5, 5, 2]
    assert [s.offset for s in stand_ins] == [14, 19, 21]  # each carries its last record's offset
    assert [r.offset for s in stand_ins for r in s.value.records] == list(range(10, 22))
    assert {(s.topic, s.partition) for s in stand_ins} == {("cc.calls", 2)}
    assert isinstance(stand_ins[0].value, RecordBundle)
    assert records_of(SimpleNamespace(value=stand_ins[2].value)) == records[10:]
    plain = SimpleNamespace(value=b"{}")
    assert records_of(plain) == (plain,)  # a message that is not a bundle stands for itself


def test_the_worker_reads_its_topics_in_bundles_with_the_configured_fetch_wait() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", fetch_max_wait_ms=321)  # never connects
    app, _ = create_app(settings)
    assert app.bundle_topics == {*settings.topics.inputs().values(), settings.topics.partials}
    assert not any("changelog" in t for t in app.bundle_topics)  # table recovery reads records one by one

    async def created() -> Any:
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms  # what aiokafka's fetcher will use
        finally:
            await consumer.stop()

    assert asyncio.run(created()) == 321  # faust's own would be 1500


async def committed(settings: Any, group: str, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
    """The group's committed offsets (an OffsetFetch; this consumer never joins the group)."""
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        return {tp: await consumer.committed(TopicPartition(*tp)) for tp in tps}
    finally:
        await consumer.stop()


def test_offsets_committed_after_bundles_cover_every_record(pipeline_factory: Any) -> None:
    """Single-event records are read in bundles; once the worker has handled them, the committed
    offset of every input partition is exactly its record count (the offsets inside a bundle are
    committed with it, not skipped, and none beyond)."""
    pipe = pipeline_factory(partitions=4, idle_timeout_s=900.0, batch_max=100)
    start = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    events = simulate(SimConfig(start=start, duration=timedelta(hours=4), seed=5))
    produced = Counter(
        (pipe.settings.topics.inputs()[f], partition_for(entity_key(f, e), pipe.settings.partitions)) for f, e in events
    )
    assert len(events) > 1000 and max(produced.values()) > 200
    pipe.start_worker()

    async def send() -> None:
        async with EventProducer(pipe.settings) as prod:
            await prod.send_events(events, envelope=1)

    asyncio.run(send())
    deadline = time.monotonic() + 120
    got: dict[tuple[str, int], int | None] = {}
    while time.monotonic() < deadline:
        got = asyncio.run(committed(pipe.settings, pipe.settings.app_id, list(produced)))
        if all((got[tp] or 0) >= n for tp, n in produced.items()):
            break
        time.sleep(1)
    assert got == dict(produced)
