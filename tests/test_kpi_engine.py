"""The pure KPI engine: streaming result == independent batch recomputation, in-process."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from callpulse.simulator import Incident, SimConfig, disorder, simulate
from streams.engine import KpiEngine, messages_of, partial_records
from streams.merge import MergeParams, WindowMerger
from streams.pipeline import LocalPipeline, expected_sources, final_record
from streams.reference import FAMILIES, Arrival, arrivals_from_events, recompute
from streams.sources import EngineParams
from tests.crashes import apply, durable
from tests.kpicompare import differences

SIZES = (60, 900, 3600)
START = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


def _run(arrivals: list[Arrival], partitions: int, params: EngineParams, batch: int = 500):
    ref, counts = recompute(arrivals, params, partitions, SIZES)
    pipe = LocalPipeline(params, MergeParams(params.base, SIZES, params.thresholds), partitions)
    pipe.feed(arrivals, batch=batch)
    return {r.key(): r for r in ref}, {r.key(): r for r in pipe.records}, counts, pipe


def _day(hours: float, seed: int, **kw) -> list:
    events = simulate(SimConfig(start=START, duration=timedelta(hours=hours), seed=seed, **kw))
    # tickets resolve over days: keep the period's events so the final watermark stays near
    end = (START + timedelta(hours=hours + 1)).timestamp()
    return [fe for fe in events if fe[1].ts.timestamp() < end]


def _messy(events: list, seed: int, partitions: int, duplicate_rate: float = 0.02) -> list[Arrival]:
    """The events shuffled within a minute, with duplicates and some held back beyond the grace
    (late), ended by a watermark that closes every window."""
    return arrivals_from_events(
        disorder(events, seed, shuffle_s=60, duplicate_rate=duplicate_rate, late_rate=0.005, late_by_s=900),
        partitions,
        final_watermark=max(e.ts.timestamp() for _, e in events) + 600,
    )


@pytest.mark.parametrize(("seed", "partitions", "batch"), [(1, 4, 500), (2, 3, 37), (3, 1, 5000)])
def test_stream_equals_reference_with_disorder_duplicates_and_late(seed: int, partitions: int, batch: int) -> None:
    events = _day(4, seed)
    arrivals = _messy(events, seed, partitions)
    params = EngineParams(grace=120)
    ref, got, counts, pipe = _run(arrivals, partitions, params, batch)
    assert counts["late"] > 0 and counts["duplicate"] > 0
    assert (pipe.late, pipe.duplicates) == (counts["late"], counts["duplicate"])
    assert len(ref) > 1000
    assert differences(ref, got) == []
    # the worker's JSON of a record (orjson) is pydantic's, byte for byte
    assert [r.to_json() for r in got.values()] == [r.model_dump_json().encode() for r in got.values()]
    # the day had every kind of activity
    total = {k: v for k, v in ref.items() if k.startswith("3600|") and k.endswith("|all|")}
    assert sum(r.offered for r in total.values()) > 500
    assert sum(r.tickets_created for r in total.values()) > 50
    assert sum(r.survey_responses for r in total.values()) > 50
    assert any(r.occupancy for r in total.values())
    assert any(r.repeat_contacts for r in total.values())
    assert any(r.csat_by_wait for r in total.values())


def test_partition_interleaving_does_not_change_results() -> None:
    """Any interleaving of partitions (as consumers fetch them) gives the same records."""
    events = _day(3, 11)
    arrivals = arrivals_from_events(
        disorder(events, 5), 4, final_watermark=max(e.ts.timestamp() for _, e in events) + 600
    )
    _, base, _, _ = _run(arrivals, 4, EngineParams())
    rng = random.Random(3)
    by_source: dict[tuple[str, int], list[Arrival]] = {}
    for a in arrivals:
        by_source.setdefault((a.family, a.partition), []).append(a)
    shuffled: list[Arrival] = []
    queues = [list(v) for v in by_source.values()]
    while queues:  # random merge that keeps each partition's own order
        q = rng.choice(queues)
        take = rng.randint(1, 400)
        shuffled.extend(q[:take])
        del q[:take]
        queues = [q for q in queues if q]
    assert len(shuffled) == len(arrivals)
    pipe = LocalPipeline(EngineParams(), MergeParams(60, SIZES, (20, 30)), 4)
    pipe.feed(shuffled, batch=300)
    assert differences(base, {r.key(): r for r in pipe.records}) == []


def test_partials_travel_as_records_of_one_sources_messages_in_order() -> None:
    """Stage 1's messages reach stage 2 as the worker sends them: per source a JSON array of its
    messages in order, split at the size limit. Records through that wire form (a limit small
    enough to split most batches, partials records shuffled across sources) are the same."""
    events = _day(3, 12)
    arrivals = arrivals_from_events(events, 3, final_watermark=max(e.ts.timestamp() for _, e in events) + 600)
    _, base, _, _ = _run(arrivals, 3, EngineParams())
    rng = random.Random(5)
    sent: list[tuple[bytes, bytes]] = []

    class OverTheWire(LocalPipeline):
        def deliver(self, messages: list[dict[str, Any]]) -> None:
            records = partial_records(messages, limit=4096)
            sent.extend(records)
            by_key: dict[bytes, list[bytes]] = {}
            for key, value in records:
                by_key.setdefault(key, []).append(value)
            queues = [list(v) for v in by_key.values()]
            while queues:  # any order across sources, each source's own kept
                q = rng.choice(queues)
                for m in messages_of(q.pop(0)):
                    self.merger.on_message(m)
                queues = [q for q in queues if q]

    pipe = OverTheWire(EngineParams(), MergeParams(60, SIZES, (20, 30)), 3)
    pipe.feed(arrivals, batch=700)
    assert differences(base, {r.key(): r for r in pipe.records}) == []
    assert len(sent) < sum(len(messages_of(v)) for _, v in sent) / 2  # records carry many messages
    for key, value in sent:
        messages = messages_of(value)
        assert {m["source"].encode() for m in messages} == {key}
        assert len(value) <= 4096 or len(messages) == 1  # one larger message goes alone
    assert messages_of(orjson.dumps({"source": "cc.calls:0", "closed": 60})) == [{"source": "cc.calls:0", "closed": 60}]


def test_silence_emits_zero_windows_for_known_queues() -> None:
    """A line outage means no events: its queue still gets windows, with zero volume."""
    outage = Incident("outage", "sales", START + timedelta(hours=1), START + timedelta(hours=2))
    events = _day(3, 4, incidents=(outage,))
    arrivals = arrivals_from_events(events, 2, final_watermark=max(e.ts.timestamp() for _, e in events) + 600)
    ref, got, _, _ = _run(arrivals, 2, EngineParams())
    assert differences(ref, got) == []
    start = int((START + timedelta(hours=1, minutes=10)).timestamp())
    silent = got[f"60|{start}|queue|sales"]
    assert silent.offered == 0 and silent.answered == 0
    assert got[f"60|{start}|queue|billing"].offered >= 0  # other queues keep their windows


def test_idle_heartbeat_closes_windows_without_new_events() -> None:
    """With no watermark and no new events, wall-clock idleness advances stream time."""
    events = _day(1, 6)
    arrivals = arrivals_from_events(events, 2)
    pipe = LocalPipeline(EngineParams(idle_timeout=30), MergeParams(60, (60,), (20, 30)), 2)
    pipe.feed(arrivals)
    before = len(pipe.records)
    slowest = min(src.st for src in pipe.engine.sources())
    for src in pipe.engine.sources():
        src.last_arrival = 1000.0  # every source last heard from at wall time 1000
    pipe.engine.tick(1000.0 + 29)  # not idle long enough
    pipe.flush()
    assert len(pipe.records) == before
    pipe.engine.tick(1000.0 + 30 + 600)  # idle: time moves on at wall-clock rate
    pipe.flush()
    assert len(pipe.records) > before
    latest = max(r.window_end for r in pipe.records).timestamp()
    # every source moved on by the 630 s of idleness: windows up to there are final
    assert latest >= slowest + 630 - 120 - 60


def test_live_values_match_an_independent_count() -> None:
    """Running values for live gauges: contacts waiting / in progress now, agents per state."""
    events = _day(2, 8)
    cut = (START + timedelta(hours=1, minutes=30)).timestamp()
    head = [fe for fe in events if fe[1].ts.timestamp() < cut]  # mid-stream: no final watermark
    pipe = LocalPipeline(EngineParams(), MergeParams(60, (60,), (20, 30)), 4)
    pipe.feed(arrivals_from_events(head, 4))
    live = pipe.engine.live()

    contacts: dict[str, dict] = {}
    agents: dict[str, str] = {}
    for family, e in head:
        if family == "calls":
            c = contacts.setdefault(e.contact_id, {"queue": e.queue, "kinds": set()})
            c["kinds"].add(e.kind.value)
        elif family == "agents":
            agents[e.agent_id] = e.state.value
    waiting = {
        q: sum(1 for c in contacts.values() if c["queue"] == q and "offered" in c["kinds"]
               and not c["kinds"] & {"answered", "abandoned", "ended"})
        for q in {c["queue"] for c in contacts.values()}
    }  # fmt: skip
    in_progress = sum(
        1 for c in contacts.values() if "offered" in c["kinds"] and not c["kinds"] & {"abandoned", "ended"}
    )
    for q, n in waiting.items():
        assert live.get(f"queue\t{q}", {}).get("waiting", 0) == n, q
    assert live["all\t"]["in_progress"] == in_progress
    assert in_progress > 0
    staffed = sum(1 for s in agents.values() if s != "logged_out")
    assert live["all\t"]["agents_staffed"] == staffed
    assert live["all\t"].get("agents_busy", 0) == sum(1 for s in agents.values() if s == "busy")
    if live["all\t"]["waiting"]:
        assert 0 < live["all\t"]["longest_wait_s"] < 3600


class RestartingMerger(LocalPipeline):
    """A pipeline whose merger is rebuilt from its changelog entries after every batch, as a
    restarted worker's is."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table: dict[str, object] = {}
        self.finals_seen = 0  # the most final base windows the table held at once

    def persist(self, merge_state: dict[str, Any]) -> None:
        for key, value in merge_state.items():
            if value is None:
                self.table.pop(key, None)
            else:
                self.table[key] = value
        self.finals_seen = max(self.finals_seen, sum(k.startswith("fin|") for k in self.table))
        fresh = type(self.merger)(self.merger.p, self.merger.expected)
        fresh.load_state(list(self.table.items()))
        self.merger = fresh


def test_merge_stage_restarted_from_its_table_after_every_batch_gives_the_same_records() -> None:
    """The merger's changelog entries (pending partials, final base windows, history, meta) are
    enough to continue: a merger rebuilt from them after every batch emits what one that never
    stopped emits, longer windows included (they are rebuilt from the final base windows)."""
    events = _day(3, 5)
    arrivals = arrivals_from_events(
        disorder(events, 5, shuffle_s=60, duplicate_rate=0.01),
        2,
        final_watermark=max(e.ts.timestamp() for _, e in events) + 600,
    )
    params = EngineParams(grace=120)
    ref, _, _, _ = _run(arrivals, 2, params)

    pipe = RestartingMerger(params, MergeParams(params.base, SIZES, params.thresholds), 2)
    pipe.feed(arrivals, batch=97)
    assert differences(ref, {r.key(): r for r in pipe.records}) == []
    # final base windows stay only while an hour containing them is open
    assert 0 < pipe.finals_seen <= 3600 // 60 + 5
    assert not any(k.startswith("roll|") for k in pipe.table)


def _positions(arrivals: list[Arrival], topics: dict[str, str]) -> list[tuple[str, int, int]]:
    """Each arrival's (topic, partition, offset), offsets counting up per partition as Kafka's do."""
    out: list[tuple[str, int, int]] = []
    last: dict[tuple[str, int], int] = {}
    for a in arrivals:
        tp = (topics[a.family], a.partition)
        last[tp] = last.get(tp, -1) + 1
        out.append((*tp, last[tp]))
    return out


def _feed(engine: KpiEngine, arrivals: list[Arrival], positions: list[tuple[str, int, int]]) -> None:
    for a, (topic, p, offset) in zip(arrivals, positions, strict=True):
        if a.event is None:
            engine.watermark(topic, p, offset, a.watermark)  # type: ignore[arg-type]
        else:
            engine.record(topic, p, offset, [a.event])


def test_stage_one_deletes_only_entries_it_wrote_and_every_stale_one_after_a_restart() -> None:
    """A batch spanning hours of stream time (a catch-up) opens, closes and forgets windows
    within itself: their entries were never written, so none is deleted (such tombstones were
    30 % of stage 1's changelog in the engine benchmark's catch-up). Entries read back by a
    restarted engine are deleted when their time comes: after the second batch no closed-window
    marker older than the pruning horizon is left in the table."""
    partitions = 2
    arrivals = _messy(_day(4, 5), 5, partitions)
    params = EngineParams(grace=120)
    topics = {f: f"cc.{f}" for f in FAMILIES}
    positions = _positions(arrivals, topics)
    table: dict[str, Any] = {}
    engine = KpiEngine(params, topics)
    half = len(arrivals) // 2  # about two hours: markers of the first hour are pruned in it
    deleted = 0
    for lo, hi in ((0, half), (half, len(arrivals))):
        if lo:  # a restarted worker: the second batch on state restored from the table
            engine = KpiEngine(params, topics)
            for p in range(partitions):
                engine.restore(p, list(table.items()), 0.0)
        _feed(engine, arrivals[lo:hi], positions[lo:hi])
        engine.settle()
        for group in engine.drain().groups():
            gone = [key for (_, key), value in group.items() if value is None]
            assert [k for k in gone if k not in table] == []
            deleted += len(gone)
            apply(table, ((key, value) for (_, key), value in group.items()))
    assert deleted > 0
    newest = max(a.event.ts.timestamp() for a in arrivals if a.event is not None)
    entries = [(*key.split("|"), value) for key, value in table.items()]  # topic, part, kind, name, value
    markers = [int(name) for _, _, kind, name, value in entries if kind == "w" and value.get("closed")]
    assert markers and min(markers) >= newest - 3 * 3600


@pytest.mark.parametrize("seed", [11, 12])
def test_merge_stage_restarted_after_crashes_mid_persist_gives_the_same_records(seed: int) -> None:
    """Stage 2 crashed at any point of its persist order (halfway through its new values, its
    meta or its deletions) and rebuilt from its table, the uncommitted partial messages read
    again: every final record (latest per key, as cc.kpis is read) equals the reference's, and
    no pending partial of a final window stays in the table."""
    partitions = 2
    events = _day(4, seed)
    arrivals = _messy(events, seed, partitions)
    params = EngineParams(grace=120)
    ref, _, _, _ = _run(arrivals, partitions, params)
    topics = {f: f"cc.{f}" for f in FAMILIES}
    engine = KpiEngine(params, topics)  # stage 1, uncrashed: the partial messages it sends
    positions = _positions(arrivals, topics)
    messages: list[dict[str, Any]] = []
    for start in range(0, len(arrivals), 300):
        _feed(engine, arrivals[start : start + 300], positions[start : start + 300])
        engine.settle()
        messages.extend(engine.drain().messages)
    merge = MergeParams(params.base, SIZES, params.thresholds)
    merger = WindowMerger(merge, expected_sources(topics, partitions))
    table: dict[str, Any] = {}
    records: dict[str, Any] = {}
    rng = random.Random(seed)
    pos = committed = crashes = 0
    longest = 0
    while pos < len(messages):
        end = min(pos + rng.randint(1, 40), len(messages))
        upto = merger.s.next_window  # the first window this batch can finalize
        for msg in messages[pos:end]:
            merger.on_message(msg)
        for fw in merger.finalize():  # sent before the state is written
            rec = final_record(fw, params.thresholds, "answered_abandoned_no_short")
            records[rec.key()] = rec
        if merger.s.next_window is not None:
            merger.prune_history(merger.s.next_window)
        groups = merger.persist_groups(merger.drain_state())
        # a customer's history keeps one contact of the windows final before this batch: the
        # latest, which decides every later "earlier one within the horizon"
        histories = [v["seen"] for g in groups for k, v in g.items() if k.startswith("hist|") and v]
        assert all(sum(ts < upto for ts, _ in seen) <= 1 for seen in histories) if upto is not None else True
        assert all(seen == sorted(seen) for seen in histories)
        longest = max([longest, *(len(seen) for seen in histories)])
        # a deletion only for an entry the table holds: a pending message or a final base window
        # that came and went between two drains was never written, and needs no tombstone
        gone = [k for g in groups for k, v in g.items() if v is None and k.startswith(("pend|", "fin|"))]
        assert [k for k in gone if k not in table] == []
        steps, crashed = durable(rng, [list(g.items()) for g in groups])
        for items in steps:
            apply(table, items)
        if not crashed:
            pos = committed = end
            continue
        crashes += 1
        merger = WindowMerger(merge, expected_sources(topics, partitions))
        merger.load_state(list(table.items()))
        pos = committed
    assert crashes > 20
    # histories that short were cut: the day had over 100 repeat contacts in one hour
    assert 0 < longest < 100 < max(r.repeat_contacts for k, r in ref.items() if k.startswith("3600|") and "|all|" in k)
    assert differences(ref, records) == []
    # nothing left behind for windows that are final
    assert not [k for k in table if k.startswith("pend|") and int(k.split("|")[1]) < merger.s.next_window]


def _agents_now(live: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The agent gauges of ``KpiEngine.live``."""
    out = {key: {k: v for k, v in values.items() if k.startswith("agents_")} for key, values in live.items()}
    return {key: values for key, values in out.items() if values}


def _agents_by_walking_facts(engine: KpiEngine) -> dict[str, dict[str, float]]:
    """Agents per state now, counted from every agent's facts (what the engine keeps as states
    change, recounted independently)."""
    out: dict[str, dict[str, float]] = {}
    for src in engine.sources():
        if src.family != "agents":
            continue
        for f in src.facts.values():
            if f["state"] in (None, "logged_out"):
                continue
            for key in ["all\t", *dict.fromkeys(f"queue\t{q}" for q in f["queues"])]:
                cell = out.setdefault(key, {})
                cell[f"agents_{f['state']}"] = cell.get(f"agents_{f['state']}", 0) + 1
                cell["agents_staffed"] = cell.get("agents_staffed", 0) + 1
    return out


@pytest.mark.parametrize(("seed", "agent_timeout"), [(7, 86_400), (8, 86_400), (9, 900)])
def test_sources_restarted_from_their_table_after_crashes_give_the_same_records(seed: int, agent_timeout: int) -> None:
    """Stage 1 rebuilt from its table entries, as a restarted worker does, after crashes at any
    point of the persist order (while sending the partial messages, or between or halfway
    through any group of entries) and the in-flight batch replayed from the last committed
    record: the records equal the reference's, nothing missing and nothing counted twice. This
    exercises what only a restart reads: window chunks, the dedup logs, the replay guards; with
    a 15-minute agent state timeout, agents timed out all day long too."""
    partitions = 2
    events = _day(4, seed)
    arrivals = _messy(events, seed, partitions, duplicate_rate=0.1)
    params = EngineParams(grace=120, agent_state_timeout=agent_timeout)
    ref, _, _, _ = _run(arrivals, partitions, params)
    topics = {f: f"cc.{f}" for f in FAMILIES}
    positions = _positions(arrivals, topics)
    engine = KpiEngine(params, topics)
    merger = WindowMerger(MergeParams(params.base, SIZES, params.thresholds), expected_sources(topics, partitions))
    table: dict[str, Any] = {}
    records = []
    rng = random.Random(seed)
    pos = committed = crashes = 0
    kinds_restored: set[str] = set()
    while pos < len(arrivals):
        end = min(pos + 41, len(arrivals))
        _feed(engine, arrivals[pos:end], positions[pos:end])
        engine.settle()
        drained = engine.drain()
        steps, crashed = durable(rng, [drained.messages, *(list(g.items()) for g in drained.groups())])
        for msg in steps[0]:  # the partial messages, sent first
            merger.on_message(msg)
        for items in steps[1:]:
            apply(table, ((key, value) for (_, key), value in items))
        records.extend(final_record(fw, params.thresholds, "answered_abandoned_no_short") for fw in merger.finalize())
        assert _agents_now(engine.live()) == _agents_by_walking_facts(engine)
        if not crashed:
            pos = committed = end
            continue
        crashes += 1
        kinds_restored |= {key.split("|")[2] for key in table}
        engine = KpiEngine(params, topics)
        for p in range(partitions):
            engine.restore(p, list(table.items()), 0.0)
        assert _agents_now(engine.live()) == _agents_by_walking_facts(engine)
        pos = committed  # at least once: the in-flight batch again
    assert crashes > 30
    assert {"w", "x", "f", "d", "m"} <= kinds_restored
    assert differences(ref, {r.key(): r for r in records}) == []
    # what is left in the table is bounded: no chunk of a closed window, no expired dedup log
    entries = [(*key.split("|"), value) for key, value in table.items()]  # topic, part, kind, name, value
    closed = {(topic, name) for topic, _, kind, name, value in entries if kind == "w" and value.get("closed")}
    assert not [name for topic, _, kind, name, _ in entries if kind == "x" and (topic, name.split(":")[0]) in closed]
    newest = max(e.ts.timestamp() for _, e in events)
    assert all(max(ts for _, _, ts in value["ids"]) > newest - 3600 for *_, kind, _, value in entries if kind == "d")


def test_agent_records_only_for_the_configured_window_sizes() -> None:
    """Per-agent records (for ClickHouse) only at the configured sizes: a per-agent minute holds
    one contact. The other dimensions and sizes are unchanged, and equal to the reference."""
    events = _day(2, 6)
    final = max(e.ts.timestamp() for _, e in events) + 600
    arrivals = arrivals_from_events(events, 2, final_watermark=final)
    params = EngineParams(grace=120)
    ref, _ = recompute(arrivals, params, 2, SIZES, agent_sizes=(900, 3600))
    pipe = LocalPipeline(params, MergeParams(params.base, SIZES, params.thresholds, agent_sizes=(900, 3600)), 2)
    pipe.feed(arrivals, batch=500)
    got = {r.key(): r for r in pipe.records}
    assert differences({r.key(): r for r in ref}, got) == []
    sizes_with_agents = {r.window_size_s for r in got.values() if r.dimension == "agent"}
    assert sizes_with_agents == {900, 3600}
    _, everything, _, _ = _run(arrivals, 2, params)
    assert {k: r for k, r in everything.items() if r.dimension != "agent" or r.window_size_s != 60}.keys() == got.keys()


def test_an_agent_listing_a_queue_twice_counts_once_in_it() -> None:
    """A queue listed twice in an agent's skills is one skill on every path (the engine's
    per-agent and grouped crediting, and the batch reference): the results equal those of the
    same day with every queue listed once."""
    from schemas.events import AgentStateEvent

    events = _day(2, 8)
    doubled = []
    for family, e in events:
        if family == "agents" and e.queues:
            e = AgentStateEvent.model_validate({**e.model_dump(), "queues": [*e.queues, *reversed(e.queues)]})
            assert e.queues == [*dict.fromkeys(e.queues)]
        doubled.append((family, e))
    assert sum(1 for f, e in events if f == "agents" and e.queues) > 100
    final = max(e.ts.timestamp() for _, e in events) + 600
    params = EngineParams(grace=120)
    once, _, _, _ = _run(arrivals_from_events(events, 2, final_watermark=final), 2, params)
    ref, got, _, _ = _run(arrivals_from_events(doubled, 2, final_watermark=final), 2, params)
    assert differences(once, ref) == []
    assert differences(once, got) == []
    assert any(r.busy_seconds for k, r in got.items() if r.dimension == "queue")


def test_zero_fill_stops_at_the_horizon_after_a_values_last_data() -> None:
    """Silence is data for a while: a value is zero-filled up to the horizon after its last data,
    then not at all (a queue taken out of service, stream time jumping a day ahead) until it has
    data again; the windows in between give no record and cost the merger one step. Stream ==
    reference, a crash-restarted merger included."""
    from schemas.events import AgentState, AgentStateEvent
    from streams.reference import recompute

    horizon = 3 * 3600
    day1 = _day(2, 9)
    end1 = max(e.ts for _, e in day1)
    agents = sorted({e.agent_id for f, e in day1 if f == "agents"})
    bye = end1 + timedelta(seconds=1)
    off = [
        ("agents", AgentStateEvent(event_id=f"off-{a}", ts=bye, agent_id=a, state=AgentState.logged_out))
        for a in agents
    ]
    queues = tuple(q for q in SimConfig().queues if q.name in ("billing", "chat"))
    day2 = simulate(SimConfig(start=START + timedelta(hours=30), duration=timedelta(hours=2), seed=10, queues=queues))
    day2 = [fe for fe in day2 if fe[0] != "tickets"]  # tickets of day 1 stay open; none new on day 2
    events = [*day1, *off, *day2]
    final = max(e.ts.timestamp() for _, e in events) + 600
    arrivals = arrivals_from_events(events, 2, final_watermark=final)
    params = EngineParams(grace=120)
    merge = MergeParams(params.base, SIZES, params.thresholds, zero_fill_horizon=horizon)
    ref_list, _ = recompute(arrivals, params, 2, SIZES, zero_fill_horizon=horizon)
    ref = {r.key(): r for r in ref_list}
    pipe = LocalPipeline(params, merge, 2)
    pipe.feed(arrivals, batch=300)
    assert differences(ref, {r.key(): r for r in pipe.records}) == []

    def starts(dimension: str, value: str) -> list[int]:
        return sorted(
            int(r.window_start.timestamp())
            for r in ref.values()
            if (r.dimension, r.dimension_value) == (dimension, value)
        )

    last1 = int(bye.timestamp()) // 60 * 60  # the log-outs' window
    day2_first = min(int(e.ts.timestamp()) for _, e in day2) // 60 * 60

    def counted(r: Any) -> bool:
        return any(getattr(r, f) for f in ("offered", "answered", "orphaned", "logged_in_seconds", "tickets_created"))

    for dimension, value in (("queue", "tech"), ("queue", "sales"), ("business_type", "business")):
        # no data on day 2: zero-filled for the horizon after the last window with data, then gone
        last_data = max(
            int(r.window_start.timestamp())
            for r in ref.values()
            if (r.dimension, r.dimension_value, r.window_size_s) == (dimension, value, 60) and counted(r)
        )
        assert last_data >= last1  # the log-outs, or a contact closed out as orphaned later
        assert max(starts(dimension, value)) == last_data + horizon - 60 < day2_first
    last_any = max(
        int(r.window_start.timestamp())
        for r in ref.values()
        if r.window_size_s == 60 and r.window_start.timestamp() < day2_first and counted(r)
    )
    gap = [r for r in ref.values() if last_any + horizon <= r.window_start.timestamp() < day2_first - 3600]
    assert gap == []  # most of the day between: no record at all
    assert sum(r.offered for r in ref.values() if r.window_start.timestamp() >= day2_first) > 100  # day 2
    zero = [
        r for r in ref.values() if r.window_size_s == 60 and last_any < r.window_start.timestamp() < last_any + horizon
    ]
    assert len(zero) > 120 and not any(counted(r) for r in zero)  # silence before the horizon: zeros

    restarted = RestartingMerger(params, merge, 2)
    restarted.feed(arrivals, batch=211)
    assert differences(ref, {r.key(): r for r in restarted.records}) == []


def test_an_agent_state_with_no_event_for_the_timeout_ends_there() -> None:
    """A lost log-out: the agent's state is credited for the timeout after its start, then the
    agent counts as logged out (as the batch reference does), however far stream time jumps."""
    from schemas.events import AgentState, AgentStateEvent

    t0, t1 = START + timedelta(seconds=30), START + timedelta(minutes=90, seconds=30)
    timeout = 2 * 3600
    events = [
        ("agents", AgentStateEvent(event_id="a1", ts=t0, agent_id="a-1", state=AgentState.ready, queues=["q"])),
        ("agents", AgentStateEvent(event_id="b1", ts=t0, agent_id="b-1", state=AgentState.busy, queues=["q"])),
        ("agents", AgentStateEvent(event_id="b2", ts=t1, agent_id="b-1", state=AgentState.ready)),
    ]
    final = (t0 + timedelta(days=40)).timestamp()
    arrivals = arrivals_from_events(events, 1, final_watermark=final)
    params = EngineParams(grace=120, agent_state_timeout=timeout)
    merge = MergeParams(params.base, SIZES, params.thresholds, zero_fill_horizon=6 * 3600)
    ref_list, _ = recompute(arrivals, params, 1, SIZES, zero_fill_horizon=6 * 3600)
    ref = {r.key(): r for r in ref_list}
    pipe = LocalPipeline(params, merge, 1)
    pipe.feed(arrivals, batch=1)
    assert differences(ref, {r.key(): r for r in pipe.records}) == []
    minutes = [r for r in ref.values() if r.window_size_s == 60 and r.dimension == "all"]
    assert sum(r.ready_seconds for r in minutes) == pytest.approx(timeout + timeout)  # a-1; b-1 ready from 90 min
    assert sum(r.busy_seconds for r in minutes) == pytest.approx(90 * 60)
    last_credit = max(r.window_start for r in minutes if r.logged_in_seconds)
    assert last_credit == START + timedelta(minutes=90 + 120)  # b-1's ready state times out
    # then zero windows for the horizon, and nothing for the 40 days after
    assert max(r.window_start for r in minutes) == last_credit + timedelta(hours=6, minutes=-1)


def test_a_sources_dimension_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values sent by mistake (a contact id as the queue) must not grow a worker without bound:
    the cache of dimension keys is emptied when full, and its keys stay right."""
    import streams.sources as sources

    monkeypatch.setattr(sources, "_DIM_CACHE_MAX", 100)
    source = KpiEngine(EngineParams(), {f: f"cc.{f}" for f in FAMILIES}).source("cc.calls", 0)
    for i in range(1000):
        assert source.dims((("queue", f"q{i}"), ("channel", "phone"))) == ("all\t", f"queue\tq{i}", "channel\tphone")
        assert len(source._dim_cache) <= 100


def test_an_earlier_versions_merge_state_keeps_its_values_zero_filled_for_a_horizon() -> None:
    """A merge state written before the zero-fill horizon (every value ever seen, agents too, with
    its first window): each value counts as having had data in the last final window, so an
    upgrade stops no value's zero windows before a horizon without data."""
    merger = WindowMerger(MergeParams(60, SIZES, (20, 30), zero_fill_horizon=3600), {"s"})
    meta = {"closed": {"s": 7200}, "next_window": 7200, "levels": {}, "known": {"queue\tq": 60, "agent\ta-1": 60}}
    merger.load_state([("meta", meta)])
    assert merger.s.known == {"queue\tq": 7140}
    merger.on_message({"source": "s", "closed": 12_000})
    finals = merger.finalize()
    zero_filled = sorted(fw.start for fw in finals if (fw.size, fw.dimkey) == (60, "queue\tq"))
    assert zero_filled == list(range(7200, 10_740, 60))  # up to the horizon after 7140
    assert merger.s.next_window == 12_000  # the silent rest stepped over
    assert merger.drain_state()["meta"]["last_data"] == {}


def test_a_calls_source_hours_ahead_of_its_surveys_walks_its_facts_once_an_hour() -> None:
    """A catch-up reads each partition in long runs, so a calls source can be hours of event time
    ahead of the surveys source its prune waits for (the survey join reads its facts). A prune
    walks every contact's facts: it ran at every window close then (old code: 280 walks in these
    6 hours; stage 1 twice as slow in the worker), and must run once an hour of the source's own
    stream time, keep what the join may read, and forget idle contacts once the surveys move."""
    from streams.sources import CallsSource

    walks: list[int] = []  # the source's own boundary at each prune

    class Counting(CallsSource):
        def prune(self, boundary: int) -> None:
            walks.append(boundary)
            super().prune(boundary)

    params = EngineParams(retention=3600)
    engine = KpiEngine(params, {f: f"cc.{f}" for f in FAMILIES})
    engine.source("cc.calls", 0)  # the shard's four sources
    shard = engine.shards[0]
    calls = shard["calls"] = Counting("cc.calls", 0, params, shard)
    events = _day(6, 21)
    survey = next(e for f, e in events if f == "surveys")
    engine.record("cc.surveys", 0, 0, [survey])  # the surveys source stays there
    contacts = [e for f, e in events if f == "calls"]
    for offset, e in enumerate(contacts):
        engine.record("cc.calls", 0, offset, [e])
    assert calls.closed - survey.ts.timestamp() > 5 * 3600
    assert 5 <= len(walks) <= 7
    assert all(later - earlier >= 3600 for earlier, later in itertools.pairwise(walks))
    assert set(calls.facts) == {e.contact_id for e in contacts}  # what the join may read is kept
    later = START + timedelta(hours=12)
    engine.watermark("cc.surveys", 0, 1, (later + timedelta(hours=3)).timestamp())  # the surveys move on
    offset = len(contacts)
    for i, (family, e) in enumerate(_day(2, 22)):
        if family == "calls":
            moved = e.model_copy(update={"ts": later + (e.ts - START), "contact_id": f"next-{i}"})
            engine.record("cc.calls", 0, offset, [moved])
            engine.settle()  # after each batch: the surveys emit up to the calls' position
            offset += 1
    cutoff = walks[-1] - params.retention
    assert cutoff > max(e.ts.timestamp() for e in contacts) + params.orphan_timeout
    assert all(k.startswith("next-") for k in calls.facts)  # the first day's contacts are gone


@pytest.mark.parametrize("family", ["calls", "tickets", "agents"])
def test_a_prune_forgets_exactly_the_idle_entities_a_walk_of_every_fact_would(family: str) -> None:
    """A prune finds idle entities through a heap by last event instead of walking every
    entity's facts: at every prune of three days (retention 2 h, the same ids every day, so that
    facts come back after being forgotten), what it forgets and keeps is what the walk's rule
    says: idle since the cutoff and forgettable, and nothing else. A restore indexes the facts
    it reads."""
    from streams.sources import SOURCE_TYPES

    checked: list[int] = []

    class Checked(SOURCE_TYPES[family]):  # type: ignore[misc, valid-type]
        def prune(self, boundary: int) -> None:
            if family == "calls":  # it keeps what the survey join may read: up to the surveys' position
                surveys = self.shard["surveys"].emitted
                boundary = -(2**62) if surveys is None else min(boundary, surveys)
            cutoff = boundary - self.p.retention
            idle = {k for k, f in self.facts.items() if f["last"] < cutoff and self.may_forget(f)}
            before = set(self.facts)
            super().prune(boundary)
            assert before - set(self.facts) == idle
            checked.append(len(idle))

    # agents still logged in at the day's end count as logged out 4 h after their last state
    params = EngineParams(retention=7200, agent_state_timeout=4 * 3600)
    engine = KpiEngine(params, {f: f"cc.{f}" for f in FAMILIES})
    engine.source("cc.calls", 0)
    shard = engine.shards[0]
    source = shard[family] = Checked(f"cc.{family}", 0, params, shard)
    offsets = dict.fromkeys(FAMILIES, 0)
    table: dict[str, Any] = {}
    for block in range(3):  # the same 12 h on three days: the same ids come back after a night
        shift = timedelta(days=block)
        for f, e in _day(12, 30):
            engine.record(f"cc.{f}", 0, offsets[f], [e.model_copy(update={"ts": e.ts + shift})])
            offsets[f] += 1
            engine.settle()
        for group in engine.drain().groups():
            apply(table, ((key, value) for (_, key), value in group.items()))
    assert len(checked) >= 30 and sum(checked) > 0
    # a restored source finds its facts by last event as the one that ran
    restored = KpiEngine(params, {f: f"cc.{f}" for f in FAMILIES})
    restored.restore(0, list(table.items()), 0.0)
    again = restored.shards[0][family]
    assert set(again.facts) == set(source.facts)
    assert sorted(again.by_last) == sorted((f["last"], key) for key, f in source.facts.items())


def test_a_window_adds_up_cells_and_partials_sent_per_dimension_alike() -> None:
    """Stage 1 sends one partial per cell (the dimensions an event counts in); an earlier version
    sent one per dimension, and its pending messages may meet a new worker's in one window. Both
    add up into each dimension: a source's cell counts in all its dimensions, a source's
    per-dimension partials each in its own, and a dimension only one of them has stays apart."""
    from streams.sources import cellkey

    def part(offered: int, answered: int) -> dict[str, Any]:
        return {"offered": offered, "answered": answered, "answered_within": [answered, answered]}

    cell = cellkey(("all\t", "queue\tsales", "channel\tphone"))
    merger = WindowMerger(MergeParams(60, (60,), (20, 30)), {"new", "old"})
    merger.on_message({"source": "new", "window": 0, "closed": 60, "parts": {cell: part(3, 2)}, "firsts": []})
    old = {"all\t": part(5, 4), "queue\tsales": part(1, 1), "queue\tbilling": part(4, 3), "channel\tphone": part(5, 4)}
    merger.on_message({"source": "old", "window": 0, "closed": 60, "parts": old, "firsts": []})
    finals = {fw.dimkey: fw.partial for fw in merger.finalize()}
    assert set(finals) == {"all\t", "queue\tsales", "queue\tbilling", "channel\tphone"}
    got = {k: (p.offered, p.answered, p.answered_within) for k, p in finals.items()}
    assert got == {
        "all\t": (8, 6, [6, 6]),
        "queue\tsales": (4, 3, [3, 3]),
        "queue\tbilling": (4, 3, [3, 3]),
        "channel\tphone": (8, 6, [6, 6]),
    }
