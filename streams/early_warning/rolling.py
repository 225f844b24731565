"""KPIs over a rolling lookback, re-evaluated at every base window.

Operators watch "service level over the last 15 minutes, updated every minute", not tumbling
15-minute windows that close a quarter of an hour late. The detector keeps, per dimension value,
the counts of the last base windows (from final ``KpiRecord``s) and computes each KPI from the
summed counts, with the same formulas as ``streams/kpis.py`` (service level through
``streams.kpis.service_level``, so the variant is the configured one).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from itertools import islice
from typing import Any

from schemas.records import KpiRecord
from streams.kpis import ratio, service_level
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
        return cls(
            end=r.window_end.timestamp(),
            offered=r.offered,
            answered=r.answered,
            abandoned=r.abandoned,
            short_abandoned=r.short_abandoned,
            answered_wait_sum=(r.asa_seconds or 0.0) * r.answered,
            longest_wait=r.longest_wait_seconds or 0.0,
            waiting_at_end=r.waiting_at_end,
            working_s=r.busy_seconds + r.acw_state_seconds,
            available_s=r.ready_seconds + r.busy_seconds + r.acw_state_seconds,
            backlog=r.backlog,
            sla_evaluated=r.sla_evaluated,
            sla_breached=r.sla_breached,
            csat_sum=(r.csat_mean or 0.0) * r.csat_responses,
            csat_n=r.csat_responses,
            handled=r.handled,
            handle_sum=(r.aht_seconds or 0.0) * r.handled,
            nps_points=(r.nps or 0.0) * r.nps_responses,
            nps_n=r.nps_responses,
            answered_within=[r.answered_within.get(str(t), 0) for t in thresholds],
            abandoned_within=[r.abandoned_within.get(str(t), 0) for t in thresholds],
        )

    def dump(self) -> list[Any]:
        """Field values in declaration order (``dataclasses.astuple`` deep-copies: 30x slower)."""
        values = (getattr(self, name) for name in _FIELDS)
        return [list(v) if isinstance(v, list) else v for v in values]

    @classmethod
    def load(cls, values: list[Any]) -> WindowCounts:
        return cls(*values)


_FIELDS = tuple(f.name for f in fields(WindowCounts))


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
    """The windows that end after ``cut``, in order: a suffix, since windows are kept in end
    order, found from the end (a lookback of 15 minutes reads 15 windows, not the hour kept)."""
    i = len(windows)
    while i and windows[i - 1].end > cut:
        i -= 1
    return list(islice(windows, i, None))


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
        for w in self.w:
            for j in range(len(self.thresholds)):
                p.answered_within[j] += w.answered_within[j]
                p.abandoned_within[j] += w.abandoned_within[j]
        return service_level(p, i, self.variant)
