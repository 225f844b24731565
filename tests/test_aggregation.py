"""Aggregators: mergeable (associative, commutative, order-independent) and the formulas right."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.kpis import SL_VARIANTS, kpi_record, service_level, service_levels
from streams.partial import KpiPartial, wait_bucket
from streams.windows import closed_boundary, floor_to, is_late, split_by_window

N = 2


@st.composite
def partials(draw: st.DrawFn) -> KpiPartial:
    p = KpiPartial(N)
    for name in ("offered", "answered", "abandoned", "short_abandoned", "handled", "transferred", "csat_n"):
        setattr(p, name, draw(st.integers(0, 50)))
    for name in ("answered_wait_sum", "talk_sum", "busy_s", "ready_s"):
        setattr(p, name, float(draw(st.integers(0, 10_000))))  # integral floats: exact sums
    p.answered_within = [draw(st.integers(0, 9)) for _ in range(N)]
    for w in draw(st.lists(st.integers(0, 600), max_size=3)):
        p.add_wait(float(w))
    for reason in draw(st.lists(st.sampled_from(["break", "lunch", "training"]), max_size=3)):
        p.not_ready_reasons[reason] = p.not_ready_reasons.get(reason, 0) + 30
    for sec, d in draw(st.lists(st.tuples(st.integers(0, 59), st.integers(-3, 3)), max_size=6)):
        p.add_level("waiting", sec, d)
    for v in draw(st.lists(st.integers(1, 100_000), max_size=5)):
        p.add_sketch("frt", float(v))
    for b, c in draw(st.lists(st.tuples(st.sampled_from(["lt_1m", "gt_5m"]), st.integers(1, 5)), max_size=3)):
        p.add_csat_wait(b, c)
    return p


def canon(p: KpiPartial) -> dict:
    d = p.to_dict()
    if p.frt is not None:  # compare sketches by what they answer, not by their encoding
        d["frt"] = (p.frt.count, round(p.frt.get_quantile_value(0.5), 6), round(p.frt.get_quantile_value(0.9), 6))
    return d


@settings(max_examples=150, deadline=None)
@given(partials(), partials(), partials())
def test_merge_is_associative(a: KpiPartial, b: KpiPartial, c: KpiPartial) -> None:
    left = a.copy().merge(b.copy()).merge(c.copy())
    right = a.copy().merge(b.copy().merge(c.copy()))
    assert canon(left) == canon(right)


@settings(max_examples=150, deadline=None)
@given(partials(), partials())
def test_merge_is_commutative(a: KpiPartial, b: KpiPartial) -> None:
    assert canon(a.copy().merge(b.copy())) == canon(b.copy().merge(a.copy()))


@settings(max_examples=100, deadline=None)
@given(st.lists(partials(), min_size=1, max_size=6), st.randoms())
def test_merge_order_does_not_matter(parts: list[KpiPartial], rnd) -> None:
    def total(ps: list[KpiPartial]) -> dict:
        acc = KpiPartial(N)
        for p in ps:
            acc.merge(p.copy())
        return canon(acc)

    shuffled = list(parts)
    rnd.shuffle(shuffled)
    assert total(parts) == total(shuffled)


@settings(max_examples=100, deadline=None)
@given(partials())
def test_serialisation_round_trip(p: KpiPartial) -> None:
    assert canon(KpiPartial.from_dict(p.to_dict(), N)) == canon(p)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 59), st.integers(-2, 3)), max_size=20), st.integers(0, 20))
def test_levels_split_into_windows_agree_with_one_pass(deltas: list[tuple[int, int]], start: int) -> None:
    """Peak and end level of a window equal those of its two halves merged in sequence."""
    whole, first, second = KpiPartial(N), KpiPartial(N), KpiPartial(N)
    for sec, d in deltas:
        whole.add_level("in_progress", sec, d)
        (first if sec < 30 else second).add_level("in_progress", sec, d)
    whole.resolve_levels({"in_progress": start})
    mid = first.resolve_levels({"in_progress": start})
    second.resolve_levels(mid)
    assert first.merge_sequential(second).levels["in_progress"] == whole.levels["in_progress"]


def _calls(answered: int, within: list[int], abandoned: int, abandoned_within: list[int], short: int, offered: int):
    p = KpiPartial(2)
    p.offered, p.answered, p.abandoned, p.short_abandoned = offered, answered, abandoned, short
    p.answered_within, p.abandoned_within = within, abandoned_within
    return p


def test_service_level_variants_by_hand() -> None:
    # 100 offered; 80 answered, 60 of them within 20 s; 20 abandoned, 5 within 20 s, 3 short (<= 5 s)
    p = _calls(80, [60, 70], 20, [5, 8], 3, 100)
    assert service_level(p, 0, "answered") == pytest.approx(60 / 80)
    assert service_level(p, 0, "answered_abandoned") == pytest.approx(60 / 100)
    assert service_level(p, 0, "answered_abandoned_no_short") == pytest.approx(60 / 97)
    assert service_level(p, 0, "abandons_ignored") == pytest.approx(60 / 95)
    assert service_level(p, 0, "abandons_positive") == pytest.approx(65 / 100)
    assert service_level(p, 0, "left_queue") == pytest.approx(65 / 100)
    assert service_level(p, 1, "answered") == pytest.approx(70 / 80)
    assert service_level(_calls(0, [0, 0], 0, [0, 0], 0, 0), 0, "answered") is None  # no calls is not 0 %


@given(
    st.lists(st.integers(0, 40), min_size=4, max_size=4),
    st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=3),
)
def test_a_records_service_levels_are_each_variants_formula(counts: list[int], within: list[tuple[int, int]]) -> None:
    """``service_levels`` (one pass per record) gives, key for key and in order, what
    ``service_level`` gives per variant and threshold, zero denominators included."""
    thresholds = tuple(10 * (i + 1) for i in range(len(within)))
    p = KpiPartial(len(thresholds))
    p.offered, p.answered, p.abandoned, p.short_abandoned = counts
    p.answered_within = [a for a, _ in within]
    p.abandoned_within = [b for _, b in within]
    expected = {f"{v}@{t}": service_level(p, i, v) for i, t in enumerate(thresholds) for v in SL_VARIANTS}
    assert list(service_levels(p, thresholds).items()) == list(expected.items())


def test_record_formulas_by_hand() -> None:
    p = _calls(4, [3, 4], 1, [1, 1], 1, 5)
    p.answered_wait_sum = 40.0
    p.handled, p.talk_sum, p.hold_sum, p.acw_sum, p.held, p.with_acw = 4, 800.0, 60.0, 120.0, 2, 4
    p.ready_s, p.busy_s, p.acw_state_s, p.not_ready_s = 1200.0, 2400.0, 600.0, 300.0
    p.csat_n, p.csat_sum, p.csat_top2 = 4, 16, 3
    p.nps_n, p.promoters, p.detractors = 10, 5, 2
    p.levels = {"in_progress": (2, 1, 6), "waiting": (1, 0, 3), "backlog": (7, 9, 9)}
    r = kpi_record(p, 900, 1_793_613_600, "queue", "billing", (20, 30), "answered_abandoned_no_short")
    assert r.window_start == datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    assert r.answer_rate == pytest.approx(0.8) and r.abandon_rate == pytest.approx(0.2)
    assert r.abandon_rate_excl_short == pytest.approx(0.0)
    assert r.service_level == pytest.approx(3 / 4)  # (4 + 1 - 1 short)
    assert r.asa_seconds == pytest.approx(10.0)
    assert r.aht_seconds == pytest.approx((800 + 60 + 120) / 4)
    assert r.avg_hold_seconds == pytest.approx(30.0) and r.hold_rate == pytest.approx(0.5)
    assert r.occupancy == pytest.approx(3000 / 4200)
    assert r.utilization == pytest.approx(3000 / 4500)
    assert r.staffed_agents == pytest.approx(4500 / 900)
    assert r.csat_mean == pytest.approx(4.0) and r.csat_top2_ratio == pytest.approx(0.75)
    assert r.nps == pytest.approx(30.0)
    assert (r.peak_concurrent, r.in_progress_at_end, r.waiting_at_end, r.backlog) == (6, 1, 0, 9)


def test_window_arithmetic() -> None:
    assert floor_to(125.0, 60) == 120
    assert closed_boundary(300.0, 60, 120) == 180
    assert not is_late(179.9, 299.9, 60, 120)  # window [120, 180) is open until stream time 300
    assert is_late(179.9, 300.0, 60, 120)
    assert is_late(119.9, 300.0, 60, 120)
    assert list(split_by_window(50.0, 130.0, 60)) == [(0, 10.0), (60, 60.0), (120, 10.0)]


def test_wait_buckets() -> None:
    assert [wait_bucket(w) for w in (None, 0, 59.9, 60, 300, 300.1)] == [
        "unknown", "lt_1m", "lt_1m", "1m_5m", "1m_5m", "gt_5m",
    ]  # fmt: skip


def test_kpi_record_sets_every_field_as_model_construct_and_validation_would() -> None:
    """``kpi_record`` builds records without pydantic's per-field construction: the result must
    hold every field, equal ``model_construct`` and survive a validated JSON round trip."""
    from schemas.records import KpiRecord
    from streams.kpis import kpi_record
    from streams.partial import KpiPartial

    p = KpiPartial(2)
    p.offered, p.answered, p.abandoned, p.answered_within = 9, 7, 2, [5, 6]
    p.ready_s, p.busy_s = 30.0, 30.0
    r = kpi_record(p, 60, 1_800_000_000, "queue", "billing", (20, 30), "answered_abandoned_no_short")
    assert set(r.__dict__) == set(KpiRecord.model_fields)
    assert r == KpiRecord.model_construct(**r.__dict__)
    assert KpiRecord.model_validate_json(r.model_dump_json()) == r
    assert r.service_level == 5 / 9 and r.occupancy == 0.5


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 30 * 86_400, allow_nan=False), min_size=1, max_size=300),
    st.lists(st.floats(0, 30 * 86_400, allow_nan=False), max_size=300),
)
def test_sketch_answers_as_the_ddsketch_library_does(xs: list[float], ys: list[float]) -> None:
    """callpulse's dict-backed sketch gives the library's quantiles, merged or not, and through
    its state (the library is the reference for the mapping and the quantile rule)."""
    from ddsketch import DDSketch

    from streams.partial import SKETCH_ACCURACY, Sketch

    lib, mine, other = DDSketch(SKETCH_ACCURACY), Sketch(), Sketch()
    for v in xs:
        lib.add(v)
        mine.add(v)
    for v in ys:
        lib.add(v)
        other.add(v)
    mine.merge(Sketch.from_state(other.to_state()))
    for q in (0.0, 0.5, 0.9, 0.95, 0.99, 1.0):
        assert mine.get_quantile_value(q) == pytest.approx(lib.get_quantile_value(q), rel=1e-12)
    assert (mine.count, mine.min, mine.max) == (lib.count, lib._min, lib._max)
    exact = sorted(xs + ys)
    p90 = exact[int(0.9 * (len(exact) - 1))]
    assert abs(mine.get_quantile_value(0.9) - p90) <= SKETCH_ACCURACY * p90 + 1e-9


@settings(max_examples=150, deadline=None)
@given(partials(), partials())
def test_merging_a_serialised_partial_equals_merging_the_partial(a: KpiPartial, b: KpiPartial) -> None:
    """The merge stage adds a source's partial from its JSON form (``merge_state``); that must be
    the same as decoding it first and merging (``merge``)."""
    state = b.to_dict()
    left = KpiPartial.from_dict(a.to_dict(), N).merge(KpiPartial.from_dict(state, N))
    right = KpiPartial.from_dict(a.to_dict(), N).merge_state(state)
    assert canon(left) == canon(right)
    assert left.to_dict() == right.to_dict()


def test_sketch_state_of_the_dense_layout_loads() -> None:
    """Changelogs written before the sparse sketch state hold the bucket range as a dense list."""
    from streams.partial import Sketch

    sk = Sketch()
    for v in (0.0, 30.0, 31.0, 3600.0, 86_400.0 * 3):
        sk.add(v)
    lo, hi = min(sk.bins), max(sk.bins)
    dense = {**sk.to_state(), "lo": lo, "b": [sk.bins.get(k, 0) for k in range(lo, hi + 1)]}
    del dense["k"], dense["c"]
    assert len(dense["b"]) > 400 and len(sk.to_state()["k"]) == 4  # zero has its own counter
    loaded = Sketch.from_state(dense)
    assert (loaded.bins, loaded.zero, loaded.count, loaded.min, loaded.max) == (sk.bins, 1, 5, 0.0, 259_200.0)
    assert loaded.quantiles((0.5, 0.9)) == sk.quantiles((0.5, 0.9))
