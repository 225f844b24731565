"""KPIs over a rolling lookback, re-evaluated at every base window.

Operators watch "service level over the last 15 minutes, updated every minute", not tumbling
15-minute windows that close a quarter of an hour late. The detector keeps, per dimension value,
the counts of the last base windows (from final ``KpiRecord``s) and computes each KPI from the
summed counts, with the same formulas as ``streams/kpis.py`` (service level through
``streams.kpis.service_level``, so the variant is the configured one).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from itertools import islice
from operator import attrgetter
from typing import Any

from schemas.records import KpiRecord
from streams.kpis import epoch_s, ratio, service_level
from streams.partial import KpiPartial


@dataclass
class WindowCounts:
    """The additive content of one base window that the rules need."""

    end: float
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    answered_wait_sum: float = 0.0
    longest_wait: float = 0.0
    waiting_at_end: int = 0
    working_s: float = 0.0
    available_s: float = 0.0
    backlog: int = 0
    sla_evaluated: int = 0
    sla_breached: int = 0
    csat_sum: float = 0.0
    csat_n: int = 0
    handled: int = 0
    handle_sum: float = 0.0
    nps_points: float = 0.0
    nps_n: int = 0
    answered_within: list[int] = field(default_factory=list)
    abandoned_within: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, r: KpiRecord, thresholds: tuple[int, ...]) -> WindowCounts:
        # the record's fields from its ``__dict__`` (where pydantic keeps them): an attribute
        # read on a model goes through its ``__getattr__`` hook, about 300 instructions each
        d = r.__dict__
        answered, handled, csat_n, nps_n = d["answered"], d["handled"], d["csat_responses"], d["nps_responses"]
        busy, acw = d["busy_seconds"], d["acw_state_seconds"]
        within, ab_within = d["answered_within"], d["abandoned_within"]
        return cls(
            end=epoch_s(d["window_end"]),
            offered=d["offered"],
            answered=answered,
            abandoned=d["abandoned"],
            short_abandoned=d["short_abandoned"],
            answered_wait_sum=(d["asa_seconds"] or 0.0) * answered,
            longest_wait=d["longest_wait_seconds"] or 0.0,
            waiting_at_end=d["waiting_at_end"],
            working_s=busy + acw,
            available_s=d["ready_seconds"] + busy + acw,
            backlog=d["backlog"],
            sla_evaluated=d["sla_evaluated"],
            sla_breached=d["sla_breached"],
            csat_sum=(d["csat_mean"] or 0.0) * csat_n,
            csat_n=csat_n,
            handled=handled,
            handle_sum=(d["aht_seconds"] or 0.0) * handled,
            nps_points=(d["nps"] or 0.0) * nps_n,
            nps_n=nps_n,
            answered_within=[within.get(str(t), 0) for t in thresholds],
            abandoned_within=[ab_within.get(str(t), 0) for t in thresholds],
        )

    def dump(self) -> list[Any]:
        """Field values in declaration order (``dataclasses.astuple`` deep-copies: 30x slower)."""
        out = []
        for name in _FIELDS:  # a loop: the compiled module resumed a generator per field
            v = getattr(self, name)
            out.append(list(v) if isinstance(v, list) else v)
        return out

    @classmethod
    def load(cls, values: list[Any]) -> WindowCounts:
        return cls(*values)


_FIELDS = tuple(f.name for f in fields(WindowCounts))
_end = attrgetter("end")


class Rolling:
    """The last base windows of one dimension value (as many as the longest lookback needs)."""

    def __init__(self, keep_s: int) -> None:
        self.keep_s = keep_s
        self.windows: deque[WindowCounts] = deque()

    def add(self, w: WindowCounts) -> None:
        self.windows.append(w)
        while self.windows and self.windows[0].end <= w.end - self.keep_s:
            self.windows.popleft()

    def over(self, lookback_s: int, now: float) -> list[WindowCounts]:
        return ending_after(self.windows, now - lookback_s)


def ending_after(windows: Sequence[WindowCounts], cut: float) -> list[WindowCounts]:
    """The windows that end after ``cut``, in order: a suffix, since windows are kept in
    strictly increasing end order, found by bisection (the staffing rule reads three lookbacks
    of the hour kept per dimension value and minute)."""
    return list(islice(windows, bisect_right(windows, cut, key=_end), None))


class LookbackKpis:
    """KPI values and volumes over a list of base windows."""

    def __init__(self, windows: list[WindowCounts], thresholds: tuple[int, ...], variant: str) -> None:
        self.w = windows
        self.thresholds = thresholds
        self.variant = variant
        self._sums: dict[str, float] = {}  # per field, on first use: rules sharing a lookback share them

    def _sum(self, name: str) -> float:
        total = self._sums.get(name)
        if total is None:
            # a loop, not ``sum`` over a generator: the compiled module resumes a generator
            # object per window, and these sums run per rule, field and window (same order of
            # additions, so the same float)
            total = 0
            for w in self.w:
                total += getattr(w, name)
            self._sums[name] = total
        return total

    def value(self, kpi: str, threshold_s: int | None = None) -> float | None:
        if not self.w:
            return None
        s = self._sum
        if kpi == "service_level":
            return self._service_level(threshold_s)
        if kpi == "answer_rate":
            return ratio(s("answered"), s("offered"))
        if kpi == "abandon_rate":
            return ratio(s("abandoned"), s("offered"))
        if kpi == "asa_seconds":
            return ratio(s("answered_wait_sum"), s("answered"))
        if kpi == "longest_wait_seconds":
            return max(w.longest_wait for w in self.w)
        if kpi == "waiting":
            return float(self.w[-1].waiting_at_end)
        if kpi == "occupancy":
            return ratio(s("working_s"), s("available_s"))
        if kpi == "backlog":
            return float(self.w[-1].backlog)
        if kpi == "sla_breach_rate":
            return ratio(s("sla_breached"), s("sla_evaluated"))
        if kpi == "csat_mean":
            return ratio(s("csat_sum"), s("csat_n"))
        if kpi == "aht_seconds":
            return ratio(s("handle_sum"), s("handled"))
        if kpi == "nps":
            return ratio(s("nps_points"), s("nps_n"))
        if kpi == "offered":
            return s("offered")
        raise ValueError(f"unknown KPI {kpi!r}")

    def volume(self, kpi: str) -> float:
        """What the minimum-volume guard counts for a KPI."""
        s = self._sum
        if kpi == "service_level":
            return s("answered") + s("abandoned") - s("short_abandoned")
        if kpi in ("answer_rate", "abandon_rate", "occupancy", "waiting", "longest_wait_seconds"):
            return s("offered")
        if kpi in ("asa_seconds", "aht_seconds"):
            return s("answered") if kpi == "asa_seconds" else s("handled")
        if kpi == "nps":
            return s("nps_n")
        if kpi == "sla_breach_rate":
            return s("sla_evaluated")
        if kpi == "csat_mean":
            return s("csat_n")
        return float("inf")  # backlog: a level, always evaluated

    def _service_level(self, threshold_s: int | None) -> float | None:
        if threshold_s not in self.thresholds:
            raise ValueError(f"service level threshold {threshold_s}s is not in CALLPULSE_SL_THRESHOLDS_S")
        i = self.thresholds.index(threshold_s)
        p = KpiPartial(len(self.thresholds))
        p.offered = int(self._sum("offered"))
        p.answered = int(self._sum("answered"))
        p.abandoned = int(self._sum("abandoned"))
        p.short_abandoned = int(self._sum("short_abandoned"))
        answered_x = abandoned_x = 0  # the counts at this threshold only: the others are not read
        for w in self.w:
            answered_x += w.answered_within[i]
            abandoned_x += w.abandoned_within[i]
        p.answered_within[i], p.abandoned_within[i] = answered_x, abandoned_x
        return service_level(p, i, self.variant)
