"""The simulator's statistics: reproducible by seed, arrivals that follow the configured
intraday/weekly profile (chi-square), abandonment that rises with waiting, CSAT that falls with
waiting, incidents that do what they say."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from callpulse.simulator import DEFAULT_QUEUES, Incident, QueueSpec, SimConfig, intraday_profile, simulate
from schemas.events import CallEventKind

MONDAY = datetime(2026, 11, 2, tzinfo=UTC)


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    cfg = SimConfig(start=MONDAY + timedelta(hours=9), duration=timedelta(hours=1), seed=3)
    a, b = simulate(cfg), simulate(cfg)
    assert [(f, e.model_dump()) for f, e in a] == [(f, e.model_dump()) for f, e in b]
    c = simulate(SimConfig(start=cfg.start, duration=cfg.duration, seed=4))
    assert [e.event_id for _, e in a] != [e.event_id for _, e in c] or a != c


def chi2_critical(df: int, z: float = 3.09) -> float:
    """Upper quantile of chi-square (Wilson-Hilferty); z = 3.09 is p = 0.001."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_arrivals_follow_the_intraday_and_weekly_profile() -> None:
    queue = QueueSpec("big", DEFAULT_QUEUES[0].channel, "retail", 400, 60)
    cfg = SimConfig(start=MONDAY, duration=timedelta(days=7), seed=9, queues=(queue,), agents=60, survey_prob=0)
    counts: dict[int, int] = defaultdict(int)
    for family, e in simulate(cfg):
        if family == "calls" and e.kind is CallEventKind.offered and e.parent_contact_id is None:
            counts[int((e.ts - MONDAY).total_seconds() // 3600)] += 1
    stat, df = 0.0, 0
    for hour in range(7 * 24):
        t = MONDAY + timedelta(hours=hour)
        # expected arrivals in the hour: the rate integrated over its minutes
        expected = sum(
            queue.rate_per_hour / 60 * intraday_profile(t.hour + (m + 0.5) / 60, t.weekday()) for m in range(60)
        )
        if expected >= 5:
            stat += (counts[hour] - expected) ** 2 / expected
            df += 1
    assert df > 100
    assert stat < chi2_critical(df - 1), f"chi2 {stat:.0f} with {df - 1} df"
    # the shape itself: two weekday peaks, quiet nights, lighter weekends
    weekday = [sum(counts[d * 24 + h] for d in range(5)) for h in range(24)]
    weekend = sum(counts[d * 24 + h] for d in (5, 6) for h in range(24)) / 2
    assert weekday.index(max(weekday)) in (9, 10, 11)
    assert weekday[3] * 5 < weekday[10]
    assert weekend < sum(weekday) / 5 * 0.6


def outcomes(events: list) -> dict[str, tuple[str, float]]:
    """contact id -> (answered | abandoned, wait seconds)."""
    out = {}
    for family, e in events:
        if family == "calls" and e.kind in (CallEventKind.answered, CallEventKind.abandoned):
            out[e.contact_id] = (e.kind.value, e.wait_seconds)
    return out


def test_abandonment_rises_with_waiting() -> None:
    start = MONDAY + timedelta(hours=8)
    drop = Incident("staffing_drop", None, start + timedelta(hours=2), start + timedelta(hours=4), 0.4)
    events = simulate(SimConfig(start=start, duration=timedelta(hours=8), seed=5, incidents=(drop,)))
    per_interval: dict[int, list[tuple[str, float]]] = defaultdict(list)
    for family, e in events:
        if family == "calls" and e.kind in (CallEventKind.answered, CallEventKind.abandoned):
            per_interval[int((e.ts - start).total_seconds() // 900)].append((e.kind.value, e.wait_seconds))
    rows = []
    for legs in per_interval.values():
        answered = [w for k, w in legs if k == "answered"]
        if len(legs) >= 20 and answered:
            rows.append((sum(answered) / len(answered), sum(k == "abandoned" for k, _ in legs) / len(legs)))
    assert len(rows) >= 20
    assert spearman([a for a, _ in rows], [b for _, b in rows]) > 0.6  # longer waits, more abandons
    during = [e for f, e in events if f == "calls" and drop.start <= e.ts < drop.end]
    before = [e for f, e in events if f == "calls" and e.ts < drop.start]

    def rate(evs: list) -> float:
        ab = sum(e.kind is CallEventKind.abandoned for e in evs)
        return ab / max(1, sum(e.kind in (CallEventKind.abandoned, CallEventKind.answered) for e in evs))

    assert rate(during) > 2 * rate(before)


def test_csat_falls_with_waiting() -> None:
    start = MONDAY + timedelta(hours=8)
    drop = Incident("staffing_drop", None, start + timedelta(hours=2), start + timedelta(hours=4), 0.25)
    cfg = SimConfig(start=start, duration=timedelta(hours=10), seed=6, incidents=(drop,), survey_prob=1.0, agents=28)
    events = simulate(cfg)
    waits = {cid: w for cid, (kind, w) in outcomes(events).items() if kind == "answered"}
    short, long_ = [], []
    for family, e in events:
        if family == "surveys" and e.csat is not None and e.contact_id in waits:
            (short if waits[e.contact_id] < 20 else long_ if waits[e.contact_id] >= 60 else []).append(e.csat)
    assert len(short) > 50 and len(long_) > 20
    assert sum(short) / len(short) > sum(long_) / len(long_) + 0.3


def test_outage_silences_its_queue_and_surge_multiplies_it() -> None:
    start = MONDAY + timedelta(hours=9)
    outage = Incident("outage", "tech", start + timedelta(hours=1), start + timedelta(hours=2))
    surge = Incident("surge", "billing", start + timedelta(hours=1), start + timedelta(hours=2), 2.5)
    events = simulate(SimConfig(start=start, duration=timedelta(hours=3), seed=8, incidents=(outage, surge)))

    def offered(queue: str, lo: datetime, hi: datetime) -> int:
        return sum(
            1
            for f, e in events
            if f == "calls"
            and e.kind is CallEventKind.offered
            and e.queue == queue
            and e.parent_contact_id is None
            and lo <= e.ts < hi
        )

    assert offered("tech", outage.start, outage.end) == 0
    assert offered("tech", start, outage.start) > 20
    before = offered("billing", start, surge.start)
    assert offered("billing", surge.start, surge.end) > 1.8 * before


def spearman(x: list[float], y: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        for rank, i in enumerate(order):
            r[i] = float(rank)
        return r

    rx, ry = ranks(x), ranks(y)
    n = len(x)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def test_only_a_free_agent_skilled_for_the_queue_answers() -> None:
    """Every answered contact goes to an agent who was ready (not busy, in after-call work or on a
    break) and has the contact's queue among its skills: what the simulator's per-queue lists of
    free agents must keep true, checked here from its output alone. A busy day with breaks and a
    staffing drop, few agents for the load, so agents go in and out of those lists all day."""
    cfg = SimConfig(
        start=MONDAY + timedelta(hours=8),
        duration=timedelta(hours=8),
        seed=21,
        agents=20,
        incidents=(Incident("staffing_drop", None, MONDAY + timedelta(hours=11), MONDAY + timedelta(hours=12), 0.5),),
    )
    out = sorted(simulate(cfg), key=lambda fe: int(fe[1].event_id.rsplit("-", 1)[1]))  # emission order
    last_state: dict[str, str] = {}
    skills: dict[str, set[str]] = {}
    busy_from: dict[str, str] = {}
    reasons: set[str | None] = set()
    answered = 0
    for family, e in out:
        if family == "agents":
            if e.state.value == "not_ready":
                reasons.add(e.reason)
            if e.state.value == "busy":
                busy_from[e.event_id] = last_state.get(e.agent_id, "none")
            last_state[e.agent_id] = e.state.value
            skills[e.agent_id] = set(e.queues)
        elif family == "calls" and e.kind is CallEventKind.answered:
            answered += 1
            assert e.queue in skills[e.agent_id], (e.contact_id, e.agent_id)
            assert last_state[e.agent_id] == "busy"  # the busy state is emitted with the answer
    assert answered > 500
    assert reasons == {"break", "unplanned"}  # agents left the lists for both reasons
    assert set(busy_from.values()) == {"ready"}
