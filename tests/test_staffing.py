"""Staffing math: Erlang C equal to an exact rational implementation and to pyworkforce on a
grid; the edge cases (unstable load, zero volume, shrinkage rounding, hundreds of agents); Erlang A
consistent with Erlang C when nobody abandons."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from callpulse.cli import main
from streams.staffing import ErlangA, ErlangC, Unstable, ceil_ratio, erlang_c, scheduled_agents


def exact_erlang_c(agents: int, load: Fraction) -> Fraction:
    """Textbook formula with exact integers and fractions (factorials and all)."""
    top = load**agents / math.factorial(agents) * Fraction(agents) / (agents - load)
    bottom = sum(load**k / math.factorial(k) for k in range(agents)) + top
    return top / bottom


GRID = [(n, Fraction(a, 4)) for n in (1, 2, 5, 10, 25, 60) for a in range(1, 4 * n) if Fraction(a, 4) < n][::3]


@pytest.mark.parametrize(("agents", "load"), GRID)
def test_erlang_c_equals_the_exact_formula(agents: int, load: Fraction) -> None:
    exact = exact_erlang_c(agents, load)
    assert erlang_c(agents, float(load)) == pytest.approx(float(exact), rel=1e-12, abs=1e-15)
    traffic = ErlangC(volume=float(load) * 1800 / 180, interval_s=1800, aht_s=180)
    asa_exact = float(exact) * 180 / (agents - float(load))
    assert traffic.asa(agents) == pytest.approx(asa_exact, rel=1e-9, abs=1e-12)


CASES = [
    (vol, aht, target, sl, occ)
    for vol in (20, 100, 350, 1200)
    for aht in (120, 300)
    for target in (20, 60)
    for sl, occ in ((0.8, None), (0.9, 0.85))
]


@pytest.mark.parametrize(("volume", "aht_s", "target_s", "sl", "max_occ"), CASES)
def test_erlang_c_equals_pyworkforce(volume: int, aht_s: int, target_s: int, sl: float, max_occ: float | None) -> None:
    from pyworkforce.queuing import ErlangC as PwErlangC

    pw = PwErlangC(transactions=volume, asa=target_s / 60, aht=aht_s / 60, interval=30, shrinkage=0.0)
    ours = ErlangC(volume, 1800, aht_s)
    theirs = pw.required_positions(service_level=sl, max_occupancy=max_occ or 1.0)
    n = ours.required_agents(sl, target_s, max_occ)
    assert n == theirs["raw_positions"]
    assert ours.service_level(n, target_s) == pytest.approx(theirs["service_level"], rel=1e-9)
    assert ours.wait_probability(n) == pytest.approx(theirs["waiting_probability"], rel=1e-9)
    assert ours.occupancy(n) == pytest.approx(theirs["occupancy"], rel=1e-12)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(0.1, 5000),
    st.floats(1, 1200),
    st.sampled_from([10, 20, 30, 60]),
    st.floats(0.05, 0.99),
    st.one_of(st.none(), st.floats(0.5, 0.99)),
)
def test_required_agents_is_the_first_staffing_that_meets_the_target(
    volume: float, aht_s: float, target_s: int, sl: float, max_occ: float | None
) -> None:
    """The search carries Erlang B from one staffing level to the next; the answer is the
    definition's: the fewest agents whose service level (computed from scratch) meets the
    target, within the occupancy cap."""
    traffic = ErlangC(volume, 900, aht_s)
    n = traffic.required_agents(sl, target_s, max_occ)
    first = math.floor(traffic.load) + 1
    if max_occ is not None:
        first = max(first, math.ceil(Fraction(str(traffic.load)) / Fraction(str(max_occ))))
    k = first
    while traffic.service_level(k, target_s) < sl:
        k += 1
    assert n == k


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.tuples(st.floats(0.001, 5000), st.floats(0.01, 1.0)),
        # quotients on an integer in decimal (k * j / 100 over j / 100): what the fractions are for
        st.tuples(st.integers(1, 2000), st.integers(1, 100)).map(lambda kj: (kj[0] * kj[1] / 100, kj[1] / 100)),
    )
)
def test_ceil_ratio_is_the_ceiling_of_the_decimal_quotient(ab: tuple[float, float]) -> None:
    """The float shortcut answers as the exact decimal fractions do."""
    a, b = ab
    assert ceil_ratio(a, b) == math.ceil(Fraction(str(a)) / Fraction(str(b)))


def test_ceil_ratio_on_quotients_that_floats_put_past_an_integer() -> None:
    assert 4.9 / 0.7 > 7 and ceil_ratio(4.9, 0.7) == 7
    assert ceil_ratio(21, 0.7) == 30 and ceil_ratio(10, 0.85) == 12 and ceil_ratio(0.0, 0.9) == 0


def test_edge_cases() -> None:
    with pytest.raises(Unstable):
        erlang_c(10, 10.0)
    with pytest.raises(Unstable):
        ErlangC(200, 1800, 180).service_level(20, 20)  # 20 Erlangs on 20 agents
    idle = ErlangC(0, 1800, 180)
    assert idle.required_agents(0.8, 20) == 0 and idle.service_level(1, 20) == 1.0 and idle.asa(1) == 0.0
    # shrinkage: 21 / (1 - 0.3) is exactly 30 (floating point says 30.000000000000004 -> 31)
    assert math.ceil(21 / (1 - 0.3)) == 31
    assert scheduled_agents(21, 0.3) == 30 and scheduled_agents(14, 0.3) == 20 and scheduled_agents(15, 0.3) == 22
    assert scheduled_agents(10, 0.0) == 10
    # hundreds of agents: no factorial overflow
    big = ErlangC(volume=9600, interval_s=1800, aht_s=90)  # 480 Erlangs
    n = big.required_agents(0.8, 20)
    assert 480 < n < 520 and 0.8 <= big.service_level(n, 20) < big.service_level(n + 1, 20)
    # the occupancy cap binds: 85 % of 10 Erlangs needs 12 agents even if the SL needs fewer
    assert ErlangC(100, 1800, 180).required_agents(0.5, 60, max_occupancy=0.85) == 12


def test_erlang_a_tends_to_erlang_c_and_abandonment_behaves() -> None:
    c = ErlangC(100, 1800, 180)
    a = ErlangA(100, 1800, 180, patience_s=1e9)
    assert a.wait_probability(12) == pytest.approx(c.wait_probability(12), rel=1e-6)
    assert a.asa(12) == pytest.approx(c.asa(12), rel=1e-5)
    impatient = ErlangA(100, 1800, 180, patience_s=60)
    assert impatient.abandon_probability(10) > impatient.abandon_probability(12) > impatient.abandon_probability(14) > 0
    # with abandonment the queue is stable even with fewer agents than Erlangs
    assert 0 < ErlangA(200, 1800, 180, patience_s=60).wait_probability(15) < 1


def test_staffing_command_prints_the_calculation() -> None:
    args = ["staffing", "--volume", "100", "--interval", "30m", "--aht", "180s", "--target", "0.8/20s"]
    out = CliRunner().invoke(main, [*args, "--max-occupancy", "0.85", "--shrinkage", "0.3", "--patience", "60s"])
    assert out.exit_code == 0, out.output
    assert "offered load          10.00 Erlangs" in out.output
    assert "agents needed         14" in out.output and "agents to schedule    20" in out.output
    assert "Erlang A" in out.output
