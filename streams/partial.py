"""Mergeable partial KPI state for one (window, dimension).

``KpiPartial`` is what a source (one topic partition) accumulates for one base window and one
dimension. Two partials of the same window merge by adding (``merge``): that is how partitions
and workers combine. Partials of consecutive windows merge into a longer window with
``merge_sequential``, once their level series have been made absolute by the merger.

No I/O here; ``to_dict``/``from_dict`` give a compact JSON form for changelogs and topics.
"""

from __future__ import annotations

from typing import Any

from ddsketch import DDSketch

SKETCH_ACCURACY = 0.01

#: Additive counters and sums (all families share one partial; unused fields stay 0).
SUMS: tuple[str, ...] = (
    # calls
    "offered",
    "answered",
    "abandoned",
    "short_abandoned",
    "answered_wait_sum",
    "abandoned_wait_sum",
    "handled",
    "talk_sum",
    "hold_sum",
    "acw_sum",
    "held",
    "with_acw",
    "transferred",
    "rona",
    "orphaned",
    "offered_identified",
    "repeat_contacts",
    # agents (seconds in state, summed over agents)
    "ready_s",
    "busy_s",
    "acw_state_s",
    "not_ready_s",
    # tickets
    "tickets_created",
    "tickets_first_responses",
    "tickets_resolved",
    "sla_evaluated",
    "sla_breached",
    "tickets_reopened",
    "tickets_closed",
    "repeat_complaints",
    # surveys
    "survey_responses",
    "csat_n",
    "csat_sum",
    "csat_top2",
    "nps_n",
    "promoters",
    "detractors",
    "ces_n",
    "ces_sum",
)
#: Per service-level threshold counters (index = position in the threshold list).
THRESHOLD_SUMS: tuple[str, ...] = ("answered_within", "abandoned_within")
#: Maxima.
MAXES: tuple[str, ...] = ("longest_wait",)
#: Keyed sums.
DICT_SUMS: tuple[str, ...] = ("not_ready_reasons",)
#: Percentile sketches.
SKETCHES: tuple[str, ...] = ("frt", "resolution")
#: Level series: contacts waiting, contacts in progress, open tickets.
LEVELS: tuple[str, ...] = ("waiting", "in_progress", "backlog")
#: CSAT by the rated contact's queue wait.
WAIT_BUCKETS: tuple[str, ...] = ("lt_1m", "1m_5m", "gt_5m", "unknown")


def wait_bucket(wait_seconds: float | None) -> str:
    """The operators' response-time buckets: < 1 min, 1-5 min, > 5 min."""
    if wait_seconds is None:
        return "unknown"
    if wait_seconds < 60:
        return "lt_1m"
    if wait_seconds <= 300:
        return "1m_5m"
    return "gt_5m"


def new_sketch() -> DDSketch:
    return DDSketch(SKETCH_ACCURACY)


def sketch_to_state(sketch: DDSketch) -> dict[str, Any]:
    """Compact JSON form of a DDSketch: its dense store's non-empty key range and totals.

    DDSketch's own protobuf decoding re-adds bins one at a time (thousands of calls per
    sketch); this form is restored by assignment. It relies on ddsketch 3.x's DenseStore
    layout (pinned in pyproject; the round trip is property-tested).
    """
    store = sketch._store
    bins: list[float] = []
    lo = 0
    if store.count:
        lo = store.min_key
        bins = store.bins[store.min_key - store.offset : store.max_key - store.offset + 1]
    return {
        "lo": lo,
        "b": [int(c) if c == int(c) else c for c in bins],
        "z": sketch._zero_count,
        "n": sketch._count,
        "s": sketch._sum,
        "mn": sketch._min if sketch._count else None,
        "mx": sketch._max if sketch._count else None,
    }


def sketch_from_state(data: dict[str, Any]) -> DDSketch:
    sketch = new_sketch()
    bins = [float(c) for c in data["b"]]
    if bins:
        store = sketch._store
        store.bins = bins
        store.offset = store.min_key = data["lo"]
        store.max_key = data["lo"] + len(bins) - 1
        store.count = sum(bins)
    sketch._zero_count = data["z"]
    sketch._count = data["n"]
    sketch._sum = data["s"]
    if data["n"]:
        sketch._min, sketch._max = data["mn"], data["mx"]
    return sketch


class KpiPartial:
    """Partial state of one window x dimension; see the module docstring.

    Level series come in two forms: in a base partial, ``deltas[level]`` maps a second offset
    in the window to the net change at that second (so partitions add up exactly); after the
    merger has placed the window in its cumulative series, ``levels[level]`` is the absolute
    ``(start, end, peak)``.
    """

    # Counters default to the class-level 0 (set below) and live in the instance dict only once
    # touched: a partial usually holds a handful of the ~40 counters, and merging, serialising
    # and emptiness checks then iterate only those.

    def __init__(self, n_thresholds: int) -> None:
        self.answered_within = [0] * n_thresholds
        self.abandoned_within = [0] * n_thresholds
        self.longest_wait = None
        self.not_ready_reasons: dict[str, float] = {}
        self.frt: DDSketch | None = None
        self.resolution: DDSketch | None = None
        self.deltas: dict[str, dict[int, int]] = {}
        self.levels: dict[str, tuple[int, int, int]] = {}
        self.csat_wait: dict[str, list[int]] = {}  # bucket -> [responses, score sum, top-2]

    # -- updates used by the source processors -------------------------------------------
    def add_wait(self, wait: float) -> None:
        if self.longest_wait is None or wait > self.longest_wait:
            self.longest_wait = wait

    def add_level(self, level: str, second: int, delta: int) -> None:
        series = self.deltas.setdefault(level, {})
        series[second] = series.get(second, 0) + delta

    def add_sketch(self, name: str, value: float) -> None:
        sketch = getattr(self, name)
        if sketch is None:
            sketch = new_sketch()
            setattr(self, name, sketch)
        sketch.add(max(value, 0.0))

    def add_csat_wait(self, bucket: str, csat: int) -> None:
        cell = self.csat_wait.setdefault(bucket, [0, 0, 0])
        cell[0] += 1
        cell[1] += csat
        cell[2] += 1 if csat >= 4 else 0

    # -- merging ---------------------------------------------------------------------------
    def _sums(self) -> list[tuple[str, float]]:
        return [(k, v) for k, v in self.__dict__.items() if k in _SUM_SET and v]

    def merge(self, other: KpiPartial) -> KpiPartial:
        """Add ``other`` (same window, another source) into self. Associative, commutative."""
        mine = self.__dict__
        for name, v in other._sums():
            mine[name] = mine.get(name, 0) + v
        for name in THRESHOLD_SUMS:
            mine, theirs = getattr(self, name), getattr(other, name)
            for i, v in enumerate(theirs):
                mine[i] += v
        if other.longest_wait is not None:
            self.add_wait(other.longest_wait)
        for reason, secs in other.not_ready_reasons.items():
            self.not_ready_reasons[reason] = self.not_ready_reasons.get(reason, 0) + secs
        for name in SKETCHES:
            theirs = getattr(other, name)
            if theirs is not None:
                mine = getattr(self, name)
                if mine is None:
                    mine = new_sketch()
                    setattr(self, name, mine)
                mine.merge(theirs)
        for level, series in other.deltas.items():
            for second, d in series.items():
                self.add_level(level, second, d)
        for bucket, (n, total, top2) in other.csat_wait.items():
            cell = self.csat_wait.setdefault(bucket, [0, 0, 0])
            cell[0] += n
            cell[1] += total
            cell[2] += top2
        if other.levels:
            if self.levels:
                raise ValueError("parallel merge of absolute levels is undefined; merge deltas first")
            self.levels = dict(other.levels)
        return self

    def resolve_levels(self, start_levels: dict[str, int]) -> dict[str, int]:
        """Turn this base window's deltas into absolute (start, end, peak); return end levels."""
        ends: dict[str, int] = {}
        for level in LEVELS:
            start = start_levels.get(level, 0)
            current = peak = start
            for second in sorted(self.deltas.get(level, {})):
                current += self.deltas[level][second]
                peak = max(peak, current)
            self.levels[level] = (start, current, peak)
            ends[level] = current
        self.deltas = {}
        return ends

    def merge_sequential(self, later: KpiPartial) -> KpiPartial:
        """Append a later window (absolute levels on both sides) to self."""
        levels = {}
        for level in LEVELS:
            a = self.levels.get(level)
            b = later.levels.get(level)
            if a is None or b is None:
                levels[level] = a or b or (0, 0, 0)
            else:
                levels[level] = (a[0], b[1], max(a[2], b[2]))
        self.levels = {}
        later_levels, later.levels = later.levels, {}
        self.merge(later)
        later.levels = later_levels
        self.levels = levels
        return self

    def copy(self) -> KpiPartial:
        p = KpiPartial.__new__(KpiPartial)
        p.__dict__.update(self._sums())
        p.answered_within = list(self.answered_within)
        p.abandoned_within = list(self.abandoned_within)
        p.longest_wait = self.longest_wait
        p.not_ready_reasons = dict(self.not_ready_reasons)
        for name in SKETCHES:
            sketch = getattr(self, name)
            if sketch is not None:
                clone = new_sketch()
                clone.merge(sketch)
                sketch = clone
            setattr(p, name, sketch)
        p.deltas = {lv: dict(series) for lv, series in self.deltas.items()}
        p.levels = dict(self.levels)
        p.csat_wait = {b: list(v) for b, v in self.csat_wait.items()}
        return p

    def is_empty(self) -> bool:
        return not (
            self._sums()
            or any(any(getattr(self, n)) for n in THRESHOLD_SUMS)
            or self.longest_wait is not None
            or self.deltas
            or self.csat_wait
            or self.frt is not None
            or self.resolution is not None
        )

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._sums())
        for name in THRESHOLD_SUMS:
            v = getattr(self, name)
            if any(v):
                out[name] = list(v)
        if self.longest_wait is not None:
            out["longest_wait"] = self.longest_wait
        if self.not_ready_reasons:
            out["not_ready_reasons"] = dict(self.not_ready_reasons)
        for name in SKETCHES:
            v = getattr(self, name)
            if v is not None:
                out[name] = sketch_to_state(v)
        if self.deltas:
            out["deltas"] = {lv: {str(s): d for s, d in series.items()} for lv, series in self.deltas.items()}
        if self.levels:
            out["levels"] = {lv: list(v) for lv, v in self.levels.items()}
        if self.csat_wait:
            out["csat_wait"] = {b: list(v) for b, v in self.csat_wait.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], n_thresholds: int) -> KpiPartial:
        p = cls(n_thresholds)
        p.__dict__.update((k, v) for k, v in data.items() if k in _SUM_SET)
        for name in THRESHOLD_SUMS:
            if name in data:
                setattr(p, name, list(data[name]))
        p.longest_wait = data.get("longest_wait")
        p.not_ready_reasons = dict(data.get("not_ready_reasons", {}))
        for name in SKETCHES:
            if name in data:
                setattr(p, name, sketch_from_state(data[name]))
        p.deltas = {lv: {int(s): d for s, d in series.items()} for lv, series in data.get("deltas", {}).items()}
        p.levels = {lv: tuple(v) for lv, v in data.get("levels", {}).items()}  # type: ignore[misc]
        p.csat_wait = {b: list(v) for b, v in data.get("csat_wait", {}).items()}
        return p


_SUM_SET = frozenset(SUMS)
for _name in SUMS:
    setattr(KpiPartial, _name, 0)
