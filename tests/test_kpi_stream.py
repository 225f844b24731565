"""The KPI engine on the real broker with real workers: every final record in cc.kpis equals the
independent batch recomputation from the same raw events (arrival order, per-partition grace,
de-duplication), with one worker, two workers, and a worker killed mid-stream."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from callpulse.simulator import SimConfig, disorder, simulate
from streams.kafka import EventProducer
from streams.reference import FAMILIES, Arrival, arrivals_from_events, recompute_as_configured
from tests.kpicompare import differences
from tests.services import REPO, wait_until

START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # a Monday, from midnight: quiet hours included
SETTINGS = {"partitions": 4, "grace_s": 120, "idle_timeout_s": 900.0, "batch_max": 2000}


def day(hours: float, seed: int) -> list[tuple[str, Any]]:
    events = simulate(SimConfig(start=START, duration=timedelta(hours=hours), seed=seed))
    end = (START + timedelta(hours=hours + 1)).timestamp()
    events = [fe for fe in events if fe[1].ts.timestamp() < end]
    return disorder(events, seed, shuffle_s=60, duplicate_rate=0.01, late_rate=0.003, late_by_s=900)


def reference(pipe: Any, arriving: list[tuple[str, Any]], final: float, arrivals: Any = None) -> dict[str, Any]:
    s = pipe.settings
    records, counts = recompute_as_configured(arrivals or arrivals_from_events(arriving, s.partitions, final), s)
    assert counts["late"] > 0 and counts["duplicate"] > 0
    return {r.key(): r for r in records}


async def produce(pipe: Any, items: list[tuple[str, Any]], envelope: int, final: float | None = None) -> None:
    async with EventProducer(pipe.settings) as prod:
        await prod.send_events(items, envelope)
        if final is not None:
            await prod.send_watermarks(final)


def stream_day(pipeline_factory: Any, hours: float, seed: int, workers: int, envelope: int) -> tuple[Any, Any, Any]:
    """Produce a simulated period to ``workers`` workers; return the pipeline, the batch
    reference and what the stream emitted."""
    pipe = pipeline_factory(**SETTINGS)
    arriving = day(hours, seed=seed)
    final = max(e.ts.timestamp() for _, e in arriving) + 600
    expected = reference(pipe, arriving, final)
    for _ in range(workers):
        pipe.start_worker()
    asyncio.run(produce(pipe, arriving, envelope=envelope, final=final))
    got = pipe.kpis(until=lambda recs: len(recs) >= len(expected))
    return pipe, expected, got


@pytest.mark.slow
def test_one_worker_day_equals_batch_reference(pipeline_factory: Any) -> None:
    _, expected, got = stream_day(pipeline_factory, hours=24, seed=21, workers=1, envelope=50)
    assert len(expected) > 15_000  # a day: 1,440 minutes x every dimension, quarters, hours
    assert differences(expected, got) == []


@pytest.mark.slow
def test_two_workers_in_one_group_equal_batch_reference(pipeline_factory: Any) -> None:
    # single-event records
    pipe, expected, got = stream_day(pipeline_factory, hours=6, seed=22, workers=2, envelope=1)
    assert differences(expected, got) == []
    assert all(w.alive() for w in pipe.workers)


def restart_mid_stream(pipeline_factory: Any, seed: int, end: str) -> tuple[Any, dict[str, Any]]:
    """Run half a day, end the worker once it has emitted final windows (``end``: ``kill``,
    SIGKILL; ``stop``, SIGTERM; ``failed write``, a write the broker does not take while it reads
    the second half), start a new one, run the rest; return the pipeline and the expected
    records. The failed write is injected (``tests/faults/sitecustomize.py``: the embedded broker
    takes every batch), the one mock of these tests."""
    pipe = pipeline_factory(**SETTINGS)
    arriving = day(6, seed=seed)
    final = max(e.ts.timestamp() for _, e in arriving) + 600
    half = len(arriving) // 2
    # after the first half the source adapter sends a watermark, as a live one does periodically
    mid = max(e.ts.timestamp() for _, e in arriving[:half]) - 300
    n = pipe.settings.partitions
    arrivals = [
        *arrivals_from_events(arriving[:half], n),
        *(Arrival(f, p, watermark=mid) for f in FAMILIES for p in range(n)),
        *arrivals_from_events(arriving[half:], n, final),
    ]
    expected = reference(pipe, arriving, final, arrivals)
    trigger = pipe.logs / f"{pipe.settings.app_id}-fail-the-next-write"
    faults = os.pathsep.join(p for p in (str(REPO / "tests" / "faults"), os.environ.get("PYTHONPATH")) if p)
    fault = {"PYTHONPATH": faults, "CALLPULSE_FAULT_TRIGGER": str(trigger)} if end == "failed write" else {}
    worker = pipe.start_worker(**fault)
    asyncio.run(produce(pipe, arriving[:half], envelope=20, final=mid))
    seen = asyncio.run(pipe.read(pipe.topics.kpis, idle_s=0.5, until=lambda recs: len(recs) > 500))
    assert len(seen) > 500 and worker.alive()
    if end == "kill":
        worker.kill()  # nothing flushed
    elif end == "stop":
        worker.stop()  # every offset committed
        assert not worker.alive()
        assert worker.proc is not None and worker.proc.returncode == 0  # a stop, not a crash
    else:
        trigger.touch()
        asyncio.run(produce(pipe, arriving[half:], envelope=20, final=final))
        wait_until(lambda: not worker.alive(), 120, what="the worker to exit after its failed write")
        assert worker.proc is not None and worker.proc.returncode != 0
        assert "injected fault: the broker did not take a batch" in worker.output()
    pipe.start_worker()
    if end != "failed write":
        asyncio.run(produce(pipe, arriving[half:], envelope=20, final=final))
    return pipe, expected


def assert_none_doubled(pipe: Any, expected: dict[str, Any]) -> None:
    """A record sent again after a restart (at-least-once) is identical to the first."""
    raw = asyncio.run(pipe.read(pipe.topics.kpis, idle_s=1.0))
    by_key: dict[bytes, set[bytes]] = {}
    for r in raw:
        by_key.setdefault(r.key, set()).add(r.value)
    assert len(by_key) == len(expected)
    assert [k for k, values in by_key.items() if len(values) > 1] == []


@pytest.mark.slow
def test_worker_killed_mid_stream_restarts_without_missing_or_doubled_windows(pipeline_factory: Any) -> None:
    pipe, expected = restart_mid_stream(pipeline_factory, seed=23, end="kill")
    got = pipe.kpis(until=lambda recs: len({r.key for r in recs}) >= len(expected))
    assert differences(expected, got) == []
    assert_none_doubled(pipe, expected)


@pytest.mark.slow
def test_graceful_restart_mid_stream_loses_nothing(pipeline_factory: Any) -> None:
    """SIGTERM commits every offset: the restarted worker must recover all state it wrote."""
    pipe, expected = restart_mid_stream(pipeline_factory, seed=24, end="stop")
    got = pipe.kpis(until=lambda recs: len({r.key for r in recs}) >= len(expected))
    assert differences(expected, got) == []


@pytest.mark.slow
def test_a_worker_whose_write_fails_exits_and_its_replacement_gives_the_reference_records(
    pipeline_factory: Any,
) -> None:
    """A write the broker does not take (a batch of state, partials or records) ends the worker
    process with an error mid-stream, and the worker started in its place (as an orchestrator
    does) gives every final record, none doubled. Before, faust's supervisor restarted the agent
    inside the same process, whose state had moved on without what was lost: in this test it then
    never emitted another record (pending windows piling up, the next window stuck, offsets
    stuck below the failed batch)."""
    pipe, expected = restart_mid_stream(pipeline_factory, seed=25, end="failed write")
    got = pipe.kpis(until=lambda recs: len({r.key for r in recs}) >= len(expected))
    assert differences(expected, got) == []
    assert_none_doubled(pipe, expected)
