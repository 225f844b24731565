"""callpulse's faust consumer (``streams/consumer.py``): records reach the agents in bundles, the
offsets committed for a bundle cover every record in it, and tables recover to the true end of
their changelogs, on the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust.streams
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from hypothesis import given, settings
from hypothesis import strategies as st
from intervaltree import IntervalTree

from callpulse.config import Settings
from callpulse.simulator import SimConfig, simulate
from schemas.events import entity_key
from sinks.app import create_sink_app
from streams.app import create_app
from streams.consumer import BundlingConsumer, RecordBundle, add_gap, bundle, records_of, take_records
from streams.kafka import EventProducer, RecordBatches, client_kwargs
from streams.partitioning import partition_for
from tests.services import wait_until

REPO = Path(__file__).resolve().parents[1]


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


def test_the_worker_and_the_sink_keep_fausts_folders_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust makes a folder per app even for memory tables: under ``data_dir``, never the working
    directory (a checkout gathered one ``<app id>-data`` folder per test worker before)."""
    monkeypatch.chdir(tmp_path)
    settings = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path / "var", app_id="folders")  # never connects
    apps = [create_app(settings)[0], create_sink_app(settings)[0]]
    assert [app.conf.datadir for app in apps] == [tmp_path / "var" / "faust" / n for n in ("folders", "folders-sink")]
    for app in apps:
        app._create_directories()  # what faust does at an app's first start: it makes only the last folder
        assert app.conf.tabledir.is_dir() and app.conf.tabledir.is_relative_to(tmp_path / "var")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["var"]


async def committed(settings: Any, group: str, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
    """The group's committed offsets (an OffsetFetch; this consumer never joins the group)."""
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        return {tp: await consumer.committed(TopicPartition(*tp)) for tp in tps}
    finally:
        await consumer.stop()


def produced_order(pipe: Any, events: list[Any]) -> list[tuple[str, int]]:
    """The topic partition of each event, in order."""
    s = pipe.settings
    return [(s.topics.inputs()[f], partition_for(entity_key(f, e), s.partitions)) for f, e in events]


def produced_counts(pipe: Any, events: list[Any]) -> Counter[tuple[str, int]]:
    return Counter(produced_order(pipe, events))


def produce_all(pipe: Any, events: list[Any]) -> None:
    """Every event as its own record (the consumer bundles them)."""

    async def send() -> None:
        async with EventProducer(pipe.settings) as prod:
            await prod.send_events(events, envelope=1)

    asyncio.run(send())


def wait_committed(pipe: Any, produced: Counter[tuple[str, int]], timeout: float = 120) -> dict[Any, int | None]:
    """The group's committed offsets once they reach the produced counts (or at the timeout)."""
    deadline = time.monotonic() + timeout
    got: dict[tuple[str, int], int | None] = {}
    while time.monotonic() < deadline:
        got = asyncio.run(committed(pipe.settings, pipe.settings.app_id, list(produced)))
        if all((got[tp] or 0) >= n for tp, n in produced.items()):
            break
        time.sleep(1)
    return got


def test_offsets_committed_after_bundles_cover_every_record(pipeline_factory: Any) -> None:
    """Single-event records are read in bundles; once the worker has handled them, the committed
    offset of every input partition is exactly its record count (the offsets inside a bundle are
    committed with it, not skipped, and none beyond). First each partition's record 0 alone, then
    the rest: faust's own gap inference skips a bundle that follows offset 0, and the commit stuck
    at 1 (CI: a survey partition at 1 of 47)."""
    pipe = pipeline_factory(partitions=4, idle_timeout_s=900.0, batch_max=100)
    start = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    events = simulate(SimConfig(start=start, duration=timedelta(hours=4), seed=5))
    produced = produced_counts(pipe, events)
    assert len(events) > 1000 and min(produced.values()) > 20 and len(produced) == 16
    firsts: dict[tuple[str, int], int] = {}
    for i, tp in enumerate(produced_order(pipe, events)):
        firsts.setdefault(tp, i)
    first = set(firsts.values())
    pipe.start_worker()

    produce_all(pipe, [e for i, e in enumerate(events) if i in first])
    assert wait_committed(pipe, Counter(dict.fromkeys(produced, 1))) == dict.fromkeys(produced, 1)
    produce_all(pipe, [e for i, e in enumerate(events) if i not in first])
    assert wait_committed(pipe, produced) == dict(produced)


Plan = list[tuple[str, int, int]]


async def take_bundles(
    app: Any, plan: Plan, handle: int = 99, stop_flow_in_batch: bool = False, fail_batch: bool = False
) -> tuple[list[int], Any]:
    """Bundles of ``cc.calls[2]`` through an agent's real path - faust's stream over a channel,
    ``take_records``, faust's consumer bookkeeping - without a broker. ``plan``: ``("read",
    first, last)`` a bundle delivered to the stream, ``("dropped", first, last)`` one delivered
    and then cleared from faust's queue before the stream saw it (a recovery or a rebalance
    suspending the flow), ``("seek", offset, 0)`` the partition moved back. Delivery is done as
    faust's drain loop does it (the consumer's hook, faust's gap inference, its read offset).
    The agent takes batches of one bundle (in the first it may suspend the flow, as a stopping
    worker does, or fail) and stays in the ``handle``-th (not acked: a batch is acked when the
    agent asks for the next). Returns the offsets of the batches taken and the consumer."""
    consumer = app.consumer
    topic = app.topic("cc.calls", key_serializer="raw", value_serializer="raw")
    app.topics.add(topic)
    await app.topics._update_indices()  # cc.calls is a topic with acks, as the agents' topics are
    app.flow_control.resume()
    channel = app.channel()
    stream = app.stream(channel)
    tp = TP("cc.calls", 2)
    handled: list[int] = []

    async def agent() -> None:
        async for batch in take_records(stream, 1, 0.05):
            if stop_flow_in_batch:
                app.flow_control.suspend()
            if fail_batch:
                raise RuntimeError("the batch's write failed")
            handled.extend(ev.message.offset for ev in batch)
            if len(handled) >= handle:
                await asyncio.Event().wait()

    task = asyncio.create_task(agent())
    for step, first, last in plan:
        if step == "seek":  # what faust's perform_seek sets
            consumer._read_offset[tp] = consumer._committed_offset[tp] = first
            continue
        records = RecordBundle([record(o) for o in range(first, last + 1)])
        message = ConsumerMessage(
            "cc.calls", 2, last, 0.0, 0, [], None, records, None, 0, len(records), generation_id=0
        )
        consumer.delivered(tp, records)  # BundlingConsumer.getmany
        read = consumer._read_offset[tp]
        if last - (read or 0) > 1 and read:  # faust's drain loop
            await consumer._add_gap(tp, read + 1, last)
        consumer._read_offset[tp] = last
        if step == "read":
            await channel.put(app.create_event(None, records, [], message))
    await asyncio.sleep(0.5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, RuntimeError):
        await task
    return handled, consumer


THREE: Plan = [("read", 0, 99), ("read", 100, 199), ("read", 200, 299)]


def test_a_bundle_its_stream_skipped_is_never_committed() -> None:
    """faust's stream skips a message it reads once the flow is suspended (a worker stopping, a
    rebalance starting), and its pure-Python iterator acks it: the two bundles behind the one
    handled were committed unread (offset 300 instead of 100). faust's compiled iterator does
    not ack them; both must leave the commit at the handled bundle. Runs with the compiled
    iterator, and with faust's own pure-Python one under ``NO_CYTHON=1`` (next test)."""
    pure_python = bool(os.environ.get("NO_CYTHON"))
    assert (faust.streams._CStreamIterator is None) == pure_python, "faust's compiled stream iterator is not installed"
    app, _ = create_app(Settings(kafka_bootstrap="127.0.0.1:1"))  # never connects
    handled, consumer = asyncio.run(take_bundles(app, THREE, stop_flow_in_batch=True))
    assert handled == [99]
    assert consumer._new_offset(TP("cc.calls", 2)) == 100
    assert not consumer._unacked_messages  # nothing left for a stopping worker to wait for
    assert consumer.skipped_unhandled == (2 if pure_python else 0)


def test_a_bundle_skipped_by_fausts_pure_python_iterator_is_never_committed() -> None:
    """The test above in a process where faust runs its pure-Python stream iterator, as it does
    when its extension is not built: ``NO_CYTHON=1``, which faust reads when it is imported."""
    test = f"{Path(__file__).relative_to(REPO)}::test_a_bundle_its_stream_skipped_is_never_committed"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        env={**os.environ, "NO_CYTHON": "1"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr


def test_one_commit_covers_every_bundle_handled() -> None:
    """faust puts a message's own offset in the gap its drain loop infers before it; acked, the
    offset was listed twice and faust's commit stopped at the duplicate: one bundle per commit
    (100 here), so a busy worker's committed offsets fell behind without bound."""
    app, _ = create_app(Settings(kafka_bootstrap="127.0.0.1:1"))
    handled, consumer = asyncio.run(take_bundles(app, THREE))
    assert handled == [99, 199, 299]
    assert consumer._new_offset(TP("cc.calls", 2)) == 300
    assert consumer._new_offset(TP("cc.calls", 2)) is None  # nothing left over
    assert not consumer._acked[TP("cc.calls", 2)] and not consumer._gap[TP("cc.calls", 2)]


def test_bundles_read_again_in_other_bounds_commit_only_what_was_handled() -> None:
    """Bundles delivered, then dropped from faust's queue (a recovery or a rebalance suspends the
    flow and clears it) and read again after a seek in bundles of other bounds (seen in the
    restart test's worker logs: 3500..3999, ... delivered, then 3500..3521, 3522..4021, ...).
    Registered as they were delivered, the dropped bundles' gaps and the new ones overlapped and
    merged into one gap across the old bundles' offsets; the first commit after an ack in it
    moved faust's list of acked offsets over the whole gap, and the next committed it, unread
    (300 here; in the restart test's failure 2832 then 7134, with no ack in between).
    Registered as bundles are acked, only handled offsets count."""
    plan: Plan = [
        ("read", 0, 99),
        ("dropped", 100, 199),
        ("dropped", 200, 299),
        ("seek", 100, 0),
        ("read", 100, 121),
        ("read", 122, 221),
        ("read", 222, 299),
    ]
    app, _ = create_app(Settings(kafka_bootstrap="127.0.0.1:1"))
    handled, consumer = asyncio.run(take_bundles(app, plan, handle=3))
    assert handled == [99, 121, 221]  # the last one still being handled: not acked
    assert consumer._new_offset(TP("cc.calls", 2)) == 122
    assert consumer._new_offset(TP("cc.calls", 2)) is None  # the next commit (faust's: 300)


def test_offsets_without_records_between_bundles_are_committed_with_the_next() -> None:
    """A hole between two bundles read one after the other (offsets without a record:
    transaction markers, compaction) is committed with the bundle after it, or the commit
    would stop there for ever. Also after the assignment's seek; not after a seek made while
    bundles read before it were still being delivered (then they are unread, not empty)."""
    app, _ = create_app(Settings(kafka_bootstrap="127.0.0.1:1"))
    plan: Plan = [("read", 0, 99), ("read", 102, 199), ("seek", 150, 0), ("read", 160, 199)]
    handled, consumer = asyncio.run(take_bundles(app, plan))
    assert handled == [99, 199, 199]
    assert consumer._new_offset(TP("cc.calls", 2)) == 200
    assert consumer._new_offset(TP("cc.calls", 2)) is None
    # a partition assigned at a committed offset whose records are gone (retention): the first
    # bundle starts later, and the commit moves on from there
    app, _ = create_app(Settings(kafka_bootstrap="127.0.0.1:1"))
    handled, consumer = asyncio.run(take_bundles(app, [("seek", 100, 0), ("read", 150, 199)]))
    assert handled == [199]
    assert consumer._new_offset(TP("cc.calls", 2)) == 200
    # a bundle read before a seek back and delivered after it: the offsets before it are unread
    app, _ = create_app(Settings(kafka_bootstrap="127.0.0.1:1"))
    plan: Plan = [("read", 0, 99), ("dropped", 100, 199), ("seek", 100, 0), ("read", 200, 299)]
    handled, consumer = asyncio.run(take_bundles(app, plan))
    assert handled == [99, 299]
    assert consumer._new_offset(TP("cc.calls", 2)) is None  # 0..99 committed by the seek, 100..199 unread


def test_a_batch_whose_handler_failed_is_not_acked() -> None:
    """A batch is acked after its handler asked for the next one, never when it raised: faust's
    own ``take_events`` acks it anyway (a sink's failed write committed). The ClickHouse sink
    reads through ``take_records`` too."""
    app, _ = create_app(Settings(kafka_bootstrap="127.0.0.1:1"))
    handled, consumer = asyncio.run(take_bundles(app, THREE, fail_batch=True))
    assert handled == []
    assert consumer._new_offset(TP("cc.calls", 2)) is None
    sink, _ = create_sink_app(Settings(kafka_bootstrap="127.0.0.1:1"))
    assert isinstance(sink.consumer, BundlingConsumer)  # its acks are take_records' too


def test_tables_recover_to_the_changelogs_last_record(kafka: Any) -> None:
    """The end faust's table recovery reads up to (the worker consumer's ``_highwaters``) is the
    offset after each partition's last record, whatever the broker answers to ListOffsets
    (Tansu answers the last record batch's base offset + 1: here 7 for 9 records)."""
    topic = f"ends-{time.monotonic_ns()}"
    batches = {0: [3, 3, 3], 1: [100, 1], 2: [1, 100], 3: []}  # records per produce batch
    settings = Settings(kafka_bootstrap=kafka.bootstrap)
    app, _ = create_app(settings)

    async def run() -> tuple[dict[int, int], dict[int, int]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            config = {"retention.ms": "-1", "retention.bytes": "-1"}
            await admin.create_topics([NewTopic(topic, len(batches), 1, topic_configs=config)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=50)
        await producer.start()
        try:
            for p, sizes in batches.items():
                for size in sizes:
                    for i in range(size):
                        await producer.send(topic, b"v%d" % i, partition=p)
                    await producer.flush()  # one record batch per flush
        finally:
            await producer.stop()
        thread = app.consumer._thread
        thread._consumer = thread._create_worker_consumer(app.transport)  # not started by faust here
        await thread._consumer.start()
        try:
            tps = [TP(topic, p) for p in batches]
            reported = await thread._consumer.end_offsets(tps)
            ends = await thread._highwaters(tps)
        finally:
            await thread._consumer.stop()
        return {tp.partition: v for tp, v in reported.items()}, {tp.partition: v for tp, v in ends.items()}

    reported, ends = asyncio.run(run())
    assert ends == {p: sum(sizes) for p, sizes in batches.items()}
    print(f"ListOffsets answered {reported}, the fetch {ends}")


async def last_metas(settings: Any, topic: str, partitions: int) -> dict[tuple[str, int], int]:
    """Each source's ``upto`` in the last meta entry of the state changelog, read to the high
    watermark a fetch reports (the records' own end, whatever ListOffsets says)."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    out: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + 60
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while [
            tp for tp in tps if consumer.highwater(tp) is None or await consumer.position(tp) < consumer.highwater(tp)
        ]:
            assert time.monotonic() < deadline, f"{topic} not read to its end in 60 s"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    source, p, kind, _ = json.loads(r.key).split("|", 3)
                    if kind == "m" and r.value is not None:
                        out[(source, int(p))] = json.loads(r.value)["upto"]
    finally:
        await consumer.stop()
    return out


@pytest.mark.slow
def test_a_restarted_worker_has_the_state_of_every_committed_offset(pipeline_factory: Any) -> None:
    """A restarted worker recovers its table to the changelog's last entry: each source's
    ``upto`` (last offset applied, in its meta) is the one last written, and covers the group's
    committed offset (records up to it are never read again). Stopped twice in the middle of a
    backlog, so that the changelog ends with a batch's metas. (Recovering to the broker's
    short ListOffsets end could lose that tail: ``streams/consumer.py``.)"""
    pipe = pipeline_factory(partitions=4, idle_timeout_s=900.0, batch_max=200)
    start = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
    # a backlog the worker cannot finish before its first commits are seen (faust commits every
    # 2.8 s): 72 hours (50,025 records) were all applied by the first run once the worker got faster
    events = simulate(SimConfig(start=start, duration=timedelta(hours=144), seed=6))
    produced = produced_counts(pipe, events)
    tps = [(topic, p) for topic in pipe.settings.topics.inputs().values() for p in range(4)]
    changelog = f"{pipe.settings.app_id}-callpulse-state-changelog"

    produce_all(pipe, events)
    pattern = re.compile(r"partition (\d+): restored \d+ state entries; applied up to offsets (\{.*\})")
    applied = []
    for cycle in range(3):
        written = asyncio.run(last_metas(pipe.settings, changelog, 4)) if cycle else {}  # no changelog yet
        commits = asyncio.run(committed(pipe.settings, pipe.settings.app_id, tps))
        worker = pipe.start_worker()
        wait_until(lambda w=worker: len(pattern.findall(w.output())) == 4, 90, what="4 partitions restored")
        restored = {
            (topic, int(p)): upto
            for p, found in pattern.findall(worker.output())
            for topic, upto in json.loads(found).items()
        }
        assert restored == {tp: written.get(tp, -1) for tp in tps}, f"restart {cycle}: not the last metas written"
        behind = {tp: (restored[tp], commits[tp]) for tp in tps if restored[tp] + 1 < (commits[tp] or 0)}
        assert behind == {}, f"restart {cycle}: (upto restored, offset committed) {behind}"
        applied.append(sum(upto + 1 for upto in restored.values()))
        if cycle < 2:
            done, deadline = applied[-1], time.monotonic() + 60
            while done < applied[-1] + 2000:  # some batches made durable and committed, not all
                assert time.monotonic() < deadline, f"restart {cycle}: the worker committed {done} records in 60 s"
                time.sleep(0.2)
                done = sum(v or 0 for v in asyncio.run(committed(pipe.settings, pipe.settings.app_id, tps)).values())
            worker.stop()
    print(f"records applied at each restart: {applied} of {sum(produced.values())}")
    assert 0 == applied[0] < applied[1] < applied[2] <= sum(produced.values())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["gap", "chop"]), st.integers(0, 300), st.integers(1, 60)),
        max_size=40,
    )
)
def test_adding_a_gap_leaves_what_fausts_rebuild_of_the_tree_leaves(steps: list[tuple[str, int, int]]) -> None:
    ours, fausts = IntervalTree(), IntervalTree()
    for op, begin, length in steps:
        if op == "gap":
            add_gap(ours, begin, begin + length)
            fausts.addi(begin, begin + length)  # faust's Consumer._add_gap
            fausts.merge_overlaps()
        else:  # what faust's commit does with the gaps below the acked offsets
            ours.chop(0, begin)
            fausts.chop(0, begin)
        assert sorted(ours) == sorted(fausts)


def test_output_batches_land_where_send_puts_them_in_order_and_whole(kafka: Any) -> None:
    """``RecordBatches`` (the worker's output) on the real broker: a keyed record goes to the
    partition ``send`` chooses for its key, a partition's records stay in order across batches
    that filled up (small batches here), and tombstones and headers arrive as written."""
    via_send, via_batches = "t-out-send", "t-out-batches"
    keys = [f"60|{1_700_000_000 + 60 * i}|queue|q{i % 7}".encode() for i in range(600)]

    async def run() -> tuple[dict[bytes, int], list[Any]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(via_send, 3, 1), NewTopic(via_batches, 3, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, max_batch_size=2048)
        await producer.start()
        try:
            sent = [await producer.send(via_send, b"v", key=k) for k in keys[:50]]
            chosen = {k: (await f).partition for k, f in zip(keys[:50], sent, strict=True)}
            out = RecordBatches(producer)
            for i, k in enumerate(keys):
                await out.add(via_batches, k, b"%d:" % i + b"x" * 100)
            await out.add(via_batches, b"gone", None, partition=1, headers=[("why", b"tombstone")])
            await out.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(via_batches, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            got: list[Any] = []
            deadline = time.monotonic() + 30
            while len(got) < len(keys) + 1 and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(records)
        finally:
            await consumer.stop()
        return chosen, got

    chosen, got = asyncio.run(run())
    assert len(got) == len(keys) + 1
    for r in got:
        if r.key in chosen:
            assert r.partition == chosen[r.key]
    written = [r for r in got if r.key != b"gone"]
    assert all(r.partition == partition_for(r.key, 3) for r in written)
    for p in range(3):
        order = [int(r.value.split(b":")[0]) for r in sorted(written, key=lambda r: r.offset) if r.partition == p]
        assert order == sorted(order) and len(order) > 20  # several 2 KiB batches per partition, in order
    (tomb,) = [r for r in got if r.key == b"gone"]
    assert (tomb.partition, tomb.value, list(tomb.headers)) == (1, None, [("why", b"tombstone")])
