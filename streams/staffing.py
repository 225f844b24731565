"""Staffing math for planners and the live staffing gap (pure, no I/O).

Erlang C (M/M/N, callers wait forever) and Erlang A (M/M/N+M, callers abandon after an
exponential patience), for ``volume`` contacts per ``interval_s`` with mean handle time ``aht_s``:
offered load ``A = volume * aht_s / interval_s`` Erlangs.

Numerically careful: Erlang C goes through the Erlang B recursion
``B(0) = 1, B(n) = A B(n-1) / (n + A B(n-1))`` (no factorials, no overflow at hundreds of agents);
with ``agents <= A`` the queue is unstable and Erlang C says so (``Unstable``) instead of
returning a probability above 1. Scheduled agents after shrinkage are an exact ceiling
(``Fraction``), so 21 / (1 - 0.3) is 30, not 31 because of ``0.7`` in binary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import cython


class Unstable(ValueError):
    """``agents <= offered load`` in Erlang C: the queue grows without bound."""


def offered_load(volume: float, interval_s: float, aht_s: float) -> float:
    if interval_s <= 0 or aht_s < 0 or volume < 0:
        raise ValueError("volume and aht must be >= 0 and the interval > 0")
    return volume * aht_s / interval_s


@cython.locals(n=cython.long, b=cython.double, a=cython.double)
def erlang_b(agents: int, load: float) -> float:
    """Blocking probability with ``agents`` servers and ``load`` Erlangs (the recursion).

    Compiled, its locals are C ``long`` and ``double`` (``cython.locals``; the loop runs per
    agent, per window and dimension of the staffing gap): the same IEEE operations in the same
    order as Python's floats, so the same result."""
    if agents < 0:
        raise ValueError("agents must be >= 0")
    a = load
    b = 1.0
    for n in range(1, agents + 1):
        b = a * b / (n + a * b)
    return b


def erlang_c(agents: int, load: float) -> float:
    """Probability that a contact waits (Erlang C), from Erlang B."""
    if load == 0:
        return 0.0
    if agents <= load:
        raise Unstable(f"{agents} agents for {load:.3f} Erlangs: the queue is unstable")
    b = erlang_b(agents, load)
    return agents * b / (agents - load * (1 - b))


def ceil_ratio(a: float, b: float) -> int:
    """``ceil(a / b)`` of the decimal values planners write (``Fraction(str(x))``): an
    occupancy cap of 0.7 on 4.9 Erlangs needs 7 agents, where the binary floats give
    7.000000000000001 and 8. The float quotient is within 1e-15 (relative) of the exact one,
    so their ceilings agree unless it is within a hair of an integer; only then the exact
    fractions (a fifth of a microsecond instead of a few: this runs per window and dimension)."""
    q = a / b
    if abs(q - round(q)) > 1e-9 * max(1.0, abs(q)):
        return math.ceil(q)
    return math.ceil(Fraction(str(a)) / Fraction(str(b)))


@dataclass(frozen=True)
class ErlangC:
    """One interval's traffic: ``volume`` contacts in ``interval_s`` seconds, handle time ``aht_s``."""

    volume: float
    interval_s: float
    aht_s: float

    @property
    def load(self) -> float:
        return offered_load(self.volume, self.interval_s, self.aht_s)

    def wait_probability(self, agents: int) -> float:
        return erlang_c(agents, self.load)

    def service_level(self, agents: int, target_s: float) -> float:
        """Share answered within ``target_s``: ``1 - C * exp(-(N - A) t / AHT)``."""
        if self.load == 0:
            return 1.0
        c = self.wait_probability(agents)
        return 1.0 - c * math.exp(-(agents - self.load) * target_s / self.aht_s)

    def asa(self, agents: int) -> float:
        """Average speed of answer (seconds): ``C * AHT / (N - A)``."""
        if self.load == 0:
            return 0.0
        return self.wait_probability(agents) * self.aht_s / (agents - self.load)

    def occupancy(self, agents: int) -> float:
        return self.load / agents if agents else 0.0

    @cython.locals(n=cython.long, b=cython.double, load=cython.double, t=cython.double, aht=cython.double)
    def required_agents(self, sl_target: float, target_s: float, max_occupancy: float | None = None) -> int:
        """The smallest N with service level >= ``sl_target`` within ``target_s`` and, if given,
        occupancy <= ``max_occupancy``. Zero volume needs zero agents."""
        if not 0 < sl_target < 1:
            raise ValueError("the service level target is a ratio between 0 and 1")
        if self.volume == 0:
            return 0
        load = self.load
        n = math.floor(load) + 1
        if max_occupancy is not None:
            n = max(n, ceil_ratio(load, max_occupancy))
        if load == 0:
            return n  # no handle time: every contact is answered at once
        # service_level(n) for n, n + 1, ... with Erlang B carried from one n to the next: the
        # same operations as erlang_b, erlang_c and service_level, without the recursion anew
        b = erlang_b(n, load)
        t, aht = target_s, self.aht_s  # C doubles when compiled, as ``erlang_b``'s
        while 1.0 - n * b / (n - load * (1 - b)) * math.exp(-(n - load) * t / aht) < sl_target:
            n += 1
            b = load * b / (n + load * b)
        return n


def scheduled_agents(required: int, shrinkage: float) -> int:
    """Agents to schedule so that ``required`` are on the phones after ``shrinkage`` (breaks,
    training, absence): ``ceil(required / (1 - shrinkage))``, exactly."""
    if not 0 <= shrinkage < 1:
        raise ValueError("shrinkage is a ratio in [0, 1)")
    return math.ceil(Fraction(required) / (1 - Fraction(str(shrinkage))))


@dataclass(frozen=True)
class ErlangA:
    """M/M/N+M: Erlang C plus abandonment with mean patience ``patience_s`` (Palm's model),
    solved exactly on the birth-death chain (truncated where the tail is below 1e-15)."""

    volume: float
    interval_s: float
    aht_s: float
    patience_s: float

    def _chain(self, agents: int) -> list[float]:
        lam = self.volume / self.interval_s
        mu = 1.0 / self.aht_s
        theta = 1.0 / self.patience_s
        probs = [1.0]
        n = 0
        while True:
            death = min(n + 1, agents) * mu + max(n + 1 - agents, 0) * theta
            nxt = probs[-1] * lam / death
            probs.append(nxt)
            n += 1
            if n > agents and nxt < 1e-15 * sum(probs):
                break
        total = sum(probs)
        return [p / total for p in probs]

    def wait_probability(self, agents: int) -> float:
        return sum(self._chain(agents)[agents:])

    def abandon_probability(self, agents: int) -> float:
        """Share of contacts that abandon: abandonment rate / arrival rate."""
        lam = self.volume / self.interval_s
        if lam == 0:
            return 0.0
        pi = self._chain(agents)
        return sum((n - agents) / self.patience_s * p for n, p in enumerate(pi) if n > agents) / lam

    def asa(self, agents: int) -> float:
        """Mean time in queue over all contacts (Little's law on the queue length)."""
        lam = self.volume / self.interval_s
        if lam == 0:
            return 0.0
        pi = self._chain(agents)
        return sum((n - agents) * p for n, p in enumerate(pi) if n > agents) / lam

    def occupancy(self, agents: int) -> float:
        pi = self._chain(agents)
        return sum(min(n, agents) * p for n, p in enumerate(pi)) / agents if agents else 0.0
