"""The live staffing gap and the understaffing warning.

* Exact figures on synthetic windows: the forecast of an interval (the seasonal profile), agents
  required on it and on the actual load (Erlang C, computed here independently), staffed agents,
  the gap, the forecast error; state survives a restart.
* The simulator with a scheduled staffing drop (a weekday morning, 60 % of the agents go
  unplanned not-ready as they finish their calls): the understaffing warning comes before the
  service-level warning, for the center and for the queues whose service level collapses.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from callpulse.config import Settings
from callpulse.simulator import DEFAULT_QUEUES, Incident, QueueSpec, SimConfig, simulate
from schemas.records import KpiRecord, WarningRecord
from streams.early_warning.backtest import run_detector
from streams.early_warning.detector import EarlyWarningDetector
from streams.early_warning.rules import RuleSet, StaffingRule, load_rules
from streams.merge import MergeParams
from streams.pipeline import LocalPipeline
from streams.reference import arrivals_from_events
from streams.sources import EngineParams
from streams.staffing import ErlangC

MONDAY = datetime(2026, 11, 2, tzinfo=UTC)


def window(t: datetime, offered: int, agents: float, aht: float = 240.0, queue: str = "billing") -> KpiRecord:
    """A one-minute queue window: ``offered`` contacts, all handled with ``aht``, ``agents``
    agents ready/busy the whole minute."""
    return KpiRecord.model_construct(
        window_size_s=60,
        window_start=t,
        window_end=t + timedelta(seconds=60),
        dimension="queue",
        dimension_value=queue,
        offered=offered,
        answered=offered,
        handled=offered,
        aht_seconds=aht,
        ready_seconds=agents * 30,
        busy_seconds=agents * 30,
        answered_within={"20": offered, "30": offered},
        abandoned_within={},
    )


def rules(**overrides: object) -> RuleSet:
    shipped = load_rules()
    staffing = shipped.staffing[0].model_copy(update={"dimensions": ["queue"], **overrides})
    seasonal = [r.model_copy(update={"dimensions": ["queue"]}) for r in shipped.seasonal]
    return RuleSet(seasonal=seasonal, staffing=[staffing])


def feed(d: EarlyWarningDetector, start: datetime, minutes: int, offered: int, agents: float) -> list[WarningRecord]:
    return run_detector(d, [window(start + timedelta(minutes=m), offered, agents) for m in range(minutes)])


def test_interval_figures_equal_an_independent_erlang_c_and_survive_a_restart() -> None:
    rs = rules()
    rule: StaffingRule = rs.staffing[0]
    d = EarlyWarningDetector(rs, 60, (20, 30), "answered_abandoned_no_short")
    # a week of 2 contacts a minute: the profile of every slot = 2 per window
    feed(d, MONDAY, 7 * 24 * 60, 2, 20.0)
    d.drain_staffing()
    # the next Monday 09:00-09:30, 3 a minute with 13 agents
    t = MONDAY + timedelta(days=7, hours=9)
    feed(d, t - timedelta(hours=9), 9 * 60, 2, 20.0)  # the night before, as usual
    d.drain_staffing()
    feed(d, t, 30, 3, 13.0)
    first, second = d.drain_staffing()
    assert (first.interval_start, second.interval_start) == (t, t + timedelta(minutes=15))
    assert first.forecast_contacts == pytest.approx(2 * 15)  # the profile x level 1.0
    assert first.forecast_low < first.forecast_contacts < first.forecast_high
    assert first.offered == 45 and first.windows == 15
    assert first.aht_seconds == pytest.approx(240.0)
    assert first.staffed_agents == pytest.approx(13.0)

    # independently: smallest n with Erlang C service level >= 80 % in 20 s and occupancy <= 90 %
    def required(volume: float) -> int:
        c = ErlangC(volume, 900, 240.0)
        n = int(c.load) + 1
        while c.service_level(n, 20) < 0.8 or c.occupancy(n) > 0.9:
            n += 1
        return n

    assert first.required_agents_forecast == required(30)
    assert first.required_agents_actual == required(45)
    assert first.gap_agents == pytest.approx(required(45) - 13.0)
    assert first.expected_service_level == pytest.approx(ErlangC(45, 900, 240.0).service_level(13, 20))
    assert first.service_level == 1.0 and first.target_service_level == rule.target
    # rolling over the day: the 36 forecast intervals of the night were exact (30 for 30), then 45 for 30
    assert first.forecast_wape == pytest.approx(15 / (36 * 30 + 45))
    # live gap at the last window
    gap = d.gaps[(rule.name, "queue", "billing")]
    assert gap.staffed == pytest.approx(13.0) and gap.required == required(45)
    assert gap.shortfall == pytest.approx((required(45) - 13) / required(45))

    # restart: a new detector from the drained state continues identically
    state = d.drain_state()
    again = EarlyWarningDetector(rs, 60, (20, 30), "answered_abandoned_no_short")
    again.load_state(state.items())
    nxt = t + timedelta(minutes=30)
    feed(d, nxt, 15, 3, 13.0)
    feed(again, nxt, 15, 3, 13.0)
    assert again.drain_staffing() == d.drain_staffing()


def test_no_judgement_before_the_lookbacks_are_full_and_none_when_staffed() -> None:
    d = EarlyWarningDetector(rules(), 60, (20, 30), "answered_abandoned_no_short")
    # 2 agents for 10 contacts a minute: hopeless, but only 10 minutes of data (< 15 min load lookback)
    assert feed(d, MONDAY, 10, 10, 2.0) == []
    assert "less data than the lookbacks" in d.notes[("understaffing", "queue", "billing")]
    # well staffed: never a warning
    d2 = EarlyWarningDetector(rules(), 60, (20, 30), "answered_abandoned_no_short")
    assert feed(d2, MONDAY, 120, 10, 60.0) == []
    # short staffed for long enough: red, with the numbers in the reason
    ws = feed(d, MONDAY + timedelta(minutes=10), 30, 10, 20.0)
    assert [w.level.value for w in ws if w.level] == ["red"]
    assert "agents short" in ws[0].reason and ws[0].kpi == "staffing_shortfall"


def first_times(warnings: list[WarningRecord], since: float) -> dict[tuple[str, str, str], float]:
    """Minutes after ``since`` at which each (rule, value, level or 'any') was first reached."""
    out: dict[tuple[str, str, str], float] = {}
    for w in warnings:
        t = (w.updated_at.timestamp() - since) / 60
        if w.level is None or t < 0:
            continue
        out.setdefault((w.rule, w.dimension_value, "any"), t)
        out.setdefault((w.rule, w.dimension_value, w.level.value), t)
    return out


@pytest.mark.slow
def test_understaffing_warns_before_the_service_level_collapses() -> None:
    s = Settings()
    start = datetime(2026, 11, 3, 7, tzinfo=UTC)  # a Tuesday morning
    drop = start + timedelta(hours=3)
    queues = tuple(QueueSpec(q.name, q.channel, q.business_type, q.rate_per_hour * 3, q.aht_s) for q in DEFAULT_QUEUES)
    cfg = SimConfig(
        start=start,
        duration=timedelta(hours=5),
        seed=5,
        queues=queues,
        agents=100,
        ticket_rate_per_hour=20,
        incidents=(Incident("staffing_drop", None, drop, drop + timedelta(hours=1), 0.4),),
    )
    events = simulate(cfg)
    final = max(e.ts.timestamp() for _, e in events) + s.grace_s + 2 * s.base_window_s
    pipe = LocalPipeline(EngineParams.from_settings(s), MergeParams.from_settings(s), s.partitions)
    pipe.feed(arrivals_from_events(events, s.partitions, final), batch=2000)
    d = EarlyWarningDetector(load_rules(), s.base_window_s, tuple(s.sl_thresholds_s), s.sl_default_variant)
    first = first_times(run_detector(d, pipe.records), drop.timestamp())
    print({k: v for k, v in sorted(first.items(), key=lambda kv: kv[1])})
    u, sl = "understaffing", "service_level_collapse"
    # the center: warned, and paged (red), minutes before the service level says so
    assert first[(u, "", "any")] + 3 <= first[(sl, "", "any")]
    assert first[(u, "", "red")] + 3 <= first[(sl, "", "red")]
    # the largest queues, each on its own skilled agents
    for queue in ("billing", "tech"):
        assert first[(u, queue, "any")] + 2 <= first[(sl, queue, "any")], queue
        assert first[(u, queue, "red")] + 2 <= first[(sl, queue, "red")], queue
    # nothing before the drop: the center was staffed for its traffic all morning
    assert not [
        w
        for w in run_detector(
            EarlyWarningDetector(load_rules(), 60, (20, 30), s.sl_default_variant),
            [r for r in pipe.records if r.window_end <= drop],
        )
        if w.rule == u and w.level is not None and w.level.value != "yellow"
    ]
