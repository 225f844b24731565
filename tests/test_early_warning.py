"""The pure early-warning detector: threshold rules (level, hysteresis, duration, volume guard,
escalation, resolution), seasonal surge/drop detection (a learned Monday peak is not a surge, a
2x surge at a quiet hour is, silence where calls are expected is a drop), cold start, and state
that survives a restart."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from schemas.records import KpiRecord, WarningRecord
from streams.early_warning.detector import EarlyWarningDetector
from streams.early_warning.rules import RuleSet, load_rules
from streams.early_warning.seasonal import SeasonalBaseline, slot_of
from tests.crashes import apply, durable

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # Monday 00:00
SL_RULE = {
    "name": "sl",
    "kpi": "service_level",
    "threshold_s": 30,
    "direction": "below",
    "dimensions": ["queue"],
    "lookback_s": 60,
    "min_volume": 10,
    "for_windows": 2,
    "clear_windows": 3,
    "levels": {
        "yellow": {"enter": 0.85, "exit": 0.88},
        "orange": {"enter": 0.75, "exit": 0.80},
        "red": {"enter": 0.60, "exit": 0.68},
    },
}


def rec(minute: int, offered: int, sl: float = 1.0, queue: str = "billing", dimension: str = "queue") -> KpiRecord:
    start = T0 + timedelta(minutes=minute)
    within = round(sl * offered)
    return KpiRecord(
        window_size_s=60,
        window_start=start,
        window_end=start + timedelta(minutes=1),
        dimension=dimension,  # type: ignore[arg-type]
        dimension_value=queue if dimension == "queue" else "",
        offered=offered,
        answered=offered,
        answered_within={"20": within, "30": within},
        abandoned_within={"20": 0, "30": 0},
    )


def detector(rules: RuleSet) -> EarlyWarningDetector:
    return EarlyWarningDetector(rules, 60, (20, 30), "answered_abandoned_no_short")


def run_sl(values: list[float], offered: int = 20) -> list[tuple[int, WarningRecord]]:
    d = detector(RuleSet.model_validate({"threshold": [SL_RULE]}))
    out = []
    for i, v in enumerate(values):
        out.extend((i, w) for w in d.observe([rec(i, offered, v)]))
    return out


def changes(ws: list[tuple[int, WarningRecord]]) -> list[tuple[int, str, str | None]]:
    return [(i, w.change, w.level.value if w.level else None) for i, w in ws]


def test_opens_after_its_duration_at_the_right_window() -> None:
    got = run_sl([0.95] * 5 + [0.82] * 3)
    assert changes(got) == [(6, "opened", "yellow")]
    w = got[0][1]
    assert w.threshold == 0.85 and w.value == 0.8 and w.dimension_value == "billing"
    assert "below the yellow threshold 85.0 %" in w.reason


def test_one_bad_window_is_not_a_warning() -> None:
    assert run_sl([0.95, 0.5, 0.95, 0.5, 0.95]) == []


def test_hysteresis_no_flapping_around_the_threshold() -> None:
    # after opening, values between enter (85 %) and exit (88 %) keep the warning open
    got = run_sl([0.8, 0.8] + [0.86, 0.84] * 6 + [0.86] * 4)
    assert changes(got) == [(1, "opened", "yellow")]
    # only values past exit for clear_windows evaluations resolve it
    got = run_sl([0.8, 0.8, 0.9, 0.9, 0.86, 0.9, 0.9, 0.9])
    assert changes(got) == [(1, "opened", "yellow"), (7, "resolved", None)]


def test_escalates_de_escalates_and_resolves() -> None:
    got = run_sl([0.8, 0.8, 0.7, 0.7, 0.5, 0.5, 0.78, 0.78, 0.78, 0.95, 0.95, 0.95])
    assert changes(got) == [
        (1, "opened", "yellow"),
        (3, "escalated", "orange"),
        (5, "escalated", "red"),
        (8, "de-escalated", "orange"),  # 78 % is past red's exit (68 %) but not orange's (80 %)
        (11, "resolved", None),
    ]
    ids = {w.warning_id for _, w in got}
    assert len(ids) == 1  # one warning through its life
    assert got[-1][1].resolved_at is not None


def test_minimum_volume_guard() -> None:
    assert run_sl([0.0] * 10, offered=3) == []


def test_shipped_rules_are_valid_and_cover_the_operators_warnings() -> None:
    rules = load_rules()
    names = {r.name for r in rules.threshold}
    assert {"service_level_collapse", "abandon_rate_high", "asa_high", "staffing_gap", "csat_drop"} <= names
    sl = next(r for r in rules.threshold if r.name == "service_level_collapse")
    assert sl.threshold_s == 30 and sl.levels["yellow"].enter == 0.85  # the emergency-plan trigger


# -- seasonal -----------------------------------------------------------------------------------
def rate(minute_of_week: int) -> float:
    """Calls per minute: quiet nights, a Monday-to-Friday peak at 10:00."""
    day, minute = divmod(minute_of_week % (7 * 1440), 1440)
    hour = minute / 60
    peak = 20 if day < 5 else 8
    return 2.0 + peak * max(0.0, 1 - abs(hour - 10) / 3)


SEASONAL = {
    "seasonal": [
        {
            "name": "volume",
            "dimensions": ["all"],
            "lookback_s": 900,
            "slot_s": 900,
            "weeks": 5,
            "min_weeks": 1,
            "surge": {
                "yellow": {"ratio": 1.3, "z": 3, "exit_ratio": 1.15},
                "orange": {"ratio": 1.6, "z": 4, "exit_ratio": 1.4},
                "red": {"ratio": 2.0, "z": 5, "exit_ratio": 1.7},
            },
            "drop": {
                "yellow": {"ratio": 0.6, "z": -3, "exit_ratio": 0.75},
                "orange": {"ratio": 0.4, "z": -4, "exit_ratio": 0.55},
                "red": {"ratio": 0.15, "z": -5, "exit_ratio": 0.3},
            },
        }
    ]
}


def poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method is fine for these small rates
    n, p, limit = 0, 1.0, pow(2.718281828459045, -lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return n
        n += 1


def feed(d: EarlyWarningDetector, minutes: range, rng: random.Random, factor: dict[int, float] | None = None):
    out = []
    for m in minutes:
        f = (factor or {}).get(m, 1.0)
        out.extend((m, w) for w in d.observe([rec(m, poisson(rng, rate(m) * f), dimension="all")]))
    return out


def test_seasonal_learned_peak_is_not_a_surge_but_a_quiet_hour_surge_and_an_outage_are() -> None:
    d = detector(RuleSet.model_validate(SEASONAL))
    rng = random.Random(3)
    week = 7 * 1440
    cold = feed(d, range(0, week), rng)
    assert cold == []  # cold start: nothing judged in the first week
    assert any("cold start" in n for n in d.notes.values()) or d.notes == {}
    history = feed(d, range(week, 2 * week), rng)
    assert [w for _, w in history if w.level and w.level.value in ("orange", "red")] == []
    # week 3: an ordinary Monday morning peak (10x the night rate) raises nothing ...
    monday = range(2 * week, 2 * week + 14 * 60)
    assert [w for _, w in feed(d, monday, rng) if w.change == "opened"] == []
    # ... a 2x surge at 20:00 (a usually quiet hour) is red, and is a surge
    surge = range(2 * week + 20 * 60, 2 * week + 21 * 60)
    got = feed(d, range(2 * week + 14 * 60, 2 * week + 22 * 60), rng, {m: 2.5 for m in surge})
    opened = [(m, w) for m, w in got if w.change in ("opened", "escalated")]
    assert opened and all(w.rule == "volume_surge" for _, w in opened)
    assert any(w.level and w.level.value == "red" for _, w in opened)
    first = min(m for m, _ in opened)
    assert surge.start <= first <= surge.start + 20  # detected within 20 minutes
    assert any(w.change == "resolved" for _, w in got)
    # ... and silence at Tuesday 11:00 (a line outage) is a red drop
    outage = range(2 * week + 1440 + 11 * 60, 2 * week + 1440 + 12 * 60)
    got = feed(d, range(2 * week + 22 * 60, 2 * week + 1440 + 13 * 60), rng, {m: 0.0 for m in outage})
    drops = [(m, w) for m, w in got if w.rule == "volume_drop" and w.level and w.level.value == "red"]
    assert drops and outage.start <= drops[0][0] <= outage.start + 15


def test_state_survives_a_restart() -> None:
    rules = RuleSet.model_validate({**SEASONAL, "threshold": [SL_RULE]})
    values = [0.95] * 3 + [0.7] * 4 + [0.95] * 5
    a = detector(rules)
    b = detector(rules)
    out_a, out_b = [], []
    for i, v in enumerate(values):
        out_a.extend(a.observe([rec(i, 20, v)]))
        out_b.extend(b.observe([rec(i, 20, v)]))
        if i == 4:  # restart b from its persisted entries
            state = b.drain_state()
            b = detector(rules)
            b.load_state(state.items())
    assert [w.model_dump() for w in out_a] == [w.model_dump() for w in out_b]
    assert len(out_a) == 2


def test_state_of_the_earlier_layout_loads_and_is_rewritten() -> None:
    """A changelog written before per-window entries (each dimension's whole lookback as
    ``ew-roll|dim|value``) restores the same detector, and is replaced: its entries are deleted and
    the windows written once each (``ew-win|end``)."""
    rules = RuleSet.model_validate({"threshold": [SL_RULE]})
    values = [0.95] * 3 + [0.7] * 4 + [0.95] * 5
    a, b = detector(rules), detector(rules)
    out_a, out_b = [], []
    for i, v in enumerate(values):
        out_a.extend(a.observe([rec(i, 20, v)]))
        out_b.extend(b.observe([rec(i, 20, v)]))
        if i == 4:
            state = {k: v for k, v in b.drain_state().items() if not k.startswith("ew-win|")}
            state["ew-roll|queue|billing"] = [w.dump() for w in b.rolling[("queue", "billing")].windows]
            b = detector(rules)
            b.load_state(state.items())
            rewritten = b.drain_state()
            assert rewritten["ew-roll|queue|billing"] is None
            assert sorted(k for k in rewritten if k.startswith("ew-win|"))
    assert [w.model_dump() for w in out_a] == [w.model_dump() for w in out_b]


# -- crash safety -------------------------------------------------------------------------------
def center_minute(minute: int, rng: random.Random) -> list[KpiRecord]:
    """One base window of a two-queue center for the shipped rules: volume on the weekly
    pattern, agents on the floor, tickets and surveys; on the eighth day a surge at 10:00 that
    the staff cannot answer, and at 15:00 half the agents gone."""
    start = T0 + timedelta(minutes=minute)
    day, of_day = divmod(minute, 1440)
    surge = day == 7 and 600 <= of_day < 660
    short_staffed = day == 7 and 900 <= of_day < 960
    out = []
    totals: dict[str, float] = {}
    for queue in ("billing", "sales"):
        offered = poisson(rng, rate(minute) * (3.0 if surge else 1.0) * (1.0 if queue == "billing" else 0.6))
        abandoned = min(offered, poisson(rng, offered * (0.4 if surge else 0.03)))
        answered = offered - abandoned
        fast = round(answered * (0.5 if surge else 0.92))
        agents = max(1, round(rate(minute) * (0.5 if short_staffed else 1.0)))
        values = {
            "offered": offered,
            "answered": answered,
            "abandoned": abandoned,
            "handled": answered,
            "ready_seconds": 60.0 * agents * 0.2,
            "busy_seconds": 60.0 * agents * 0.7,
            "acw_state_seconds": 60.0 * agents * 0.1,
            "sla_evaluated": 2,
            "sla_breached": rng.randint(0, 1),
            "csat_responses": 2,
            "nps_responses": 2,
        }
        for k, v in values.items():
            totals[k] = totals.get(k, 0) + v
        out.append((queue, values, fast, rng.uniform(5, 200 if surge else 40)))
    out.append(("", totals, sum(f for *_, f, _ in out), max(w for *_, w in out)))
    return [
        KpiRecord(
            window_size_s=60,
            window_start=start,
            window_end=start + timedelta(minutes=1),
            dimension="queue" if queue else "all",  # type: ignore[arg-type]
            dimension_value=queue,
            **values,
            answered_within={"20": fast, "30": fast},
            abandoned_within={"20": 0, "30": 0},
            asa_seconds=wait / 3,
            longest_wait_seconds=wait,
            aht_seconds=280.0,
            csat_mean=4.2,
            nps=30.0,
        )
        for queue, values, fast, wait in out
    ]


def test_detector_restarted_after_crashes_mid_persist_gives_the_same_warnings_and_state() -> None:
    """The detector's entries reach the merge stage's table in the order they were sent; a crash
    lets through a prefix of them, and the restarted worker finalizes the same windows again
    (their meta was not written). Whatever the prefix, the rolling windows, seasonal baselines,
    staffing plans and warning lifecycles must come out as if nothing had happened: the same
    warning changes (replayed ones repeat an earlier change exactly), the same staffing records,
    the same final table."""
    rng = random.Random(5)
    minutes = [center_minute(m, rng) for m in range(8 * 1440)]
    batches, m = [], 0
    while m < len(minutes):  # a batch finalizes a few base windows, as the merge stage's do
        n = rng.choice([1, 1, 2, 3, 7, 15])
        batches.append([r for recs in minutes[m : m + n] for r in recs])
        m += n

    def new() -> EarlyWarningDetector:
        return EarlyWarningDetector(load_rules(), 60, (20, 30), "answered_abandoned_no_short")

    def run(crash_rng: random.Random | None) -> tuple[list[str], list[str], dict, int]:
        d, table, warnings, staffing = new(), {}, [], []
        pos = crashes = 0
        while pos < len(batches):
            warnings.extend(w.model_dump_json() for w in d.observe(batches[pos]))
            staffing.extend(s.model_dump_json() for s in d.drain_staffing())
            entries = list(d.drain_state().items())
            steps, crashed = durable(crash_rng, [entries]) if crash_rng else ([entries], False)
            apply(table, steps[0])
            if crashed:
                crashes += 1
                d = new()
                d.load_state(list(table.items()))
            else:
                pos += 1
        return warnings, staffing, table, crashes

    warnings, staffing, table, _ = run(None)
    crashed_warnings, crashed_staffing, crashed_table, crashes = run(random.Random(6))
    assert crashes > 300
    rules = {json.loads(w)["rule"] for w in warnings}
    assert {"volume_anomaly_surge", "service_level_collapse", "understaffing"} <= rules, rules
    assert len(staffing) > 800
    assert sorted(set(crashed_warnings)) == sorted(warnings)  # nothing lost, nothing new, no variant
    assert sorted(set(crashed_staffing)) == sorted(staffing)
    assert crashed_table == table


def test_state_written_before_the_replay_guards_loads() -> None:
    """Entries of the layout before the replay guards (the tracker as a plain list of states, a
    profile as its slots alone, the open slot without its last window, staffing without its last
    interval) restore the same detector: the same warnings and baselines afterwards."""
    rules = RuleSet.model_validate({**SEASONAL, "threshold": [SL_RULE]})
    rng = random.Random(4)
    minutes = [
        [rec(m, 20, 0.7 if 2990 <= m < 3010 else 0.95), rec(m, poisson(rng, rate(m)), dimension="all")]
        for m in range(4000)
    ]
    a, b = detector(rules), detector(rules)
    out_a, out_b, state = [], [], {}
    for m, recs in enumerate(minutes):
        out_a.extend(a.observe(recs))
        out_b.extend(b.observe(recs))
        state.update(b.drain_state())
        if m == 3000:
            assert b.tracker.states  # a warning is open across the restart
            old = {}
            for k, v in state.items():
                if k == "ew-tracker":
                    v = v["states"]
                elif k.startswith("ew-prof|"):
                    v = v["slots"]
                elif k.startswith("ew-base|"):
                    v = v[:5]
                old[k] = v
            b = detector(rules)
            b.load_state(old.items())
    assert [w.model_dump() for w in out_a] == [w.model_dump() for w in out_b]
    assert len(out_a) >= 2
    assert [x.dump_profile() for x in a.baselines.values()] == [x.dump_profile() for x in b.baselines.values()]


@settings(max_examples=300, deadline=None)
@given(
    slot_s=st.sampled_from([60, 300, 900, 3600, 7 * 86_400, 1000, 86_399]),
    window_s=st.sampled_from([60, 300, 900, 3600, 45, 7]),
    start=st.integers(0, 3 * 7 * 86_400),
    span=st.integers(0, 3 * 86_400),
    missing=st.sets(st.integers(0, 700), max_size=3),
)
@example(slot_s=1000, window_s=60, start=345_000, span=700, missing={0})  # ends in the next week's slot 0
def test_a_trusted_lookback_is_one_with_history_for_every_window_start(
    slot_s: int, window_s: int, start: int, span: int, missing: set[int]
) -> None:
    """``trusted`` looks up each slot once; the definition is every window start's slot, also
    where a slot does not divide the week (its last slot is short) and across the week's end."""
    b = SeasonalBaseline(slot_s, window_s, weeks=5, min_weeks=1, half_life_s=86_400)
    b.history = {slot: [1.0] for slot in range(7 * 86_400 // slot_s + 1) if slot not in missing}
    starts = range(start, start + span, window_s)
    assert b.trusted(start, start + span) == all(slot_of(t, slot_s) not in missing for t in starts)
