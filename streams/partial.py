"""Mergeable partial KPI state for one (window, dimension).

``KpiPartial`` is what a source (one topic partition) accumulates for one base window and one
dimension. Two partials of the same window merge by adding (``merge``): that is how partitions
and workers combine. Partials of consecutive windows merge into a longer window with
``merge_sequential``, once their level series have been made absolute by the merger.

No I/O here; ``to_dict``/``from_dict`` give a compact JSON form for changelogs and topics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from math import ceil, log
from typing import Any

import cython
from ddsketch.mapping import LogarithmicMapping

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


_MAPPING = LogarithmicMapping(SKETCH_ACCURACY)
# ``_MAPPING.key(v)`` is ``int(ceil(log2(v) * multiplier) + offset)`` (its documented attributes):
# inlined with the same operations, the keys are the library's (property-tested), without two
# method calls per value
_MIN_VALUE, _MULTIPLIER, _OFFSET = _MAPPING.min_possible, _MAPPING._multiplier, _MAPPING._offset
# and ``_MAPPING.value(k)`` is ``pow(2.0, (k - offset) / multiplier) * (2.0 / (1 + gamma))``
_VALUE_FACTOR = 2.0 / (1 + _MAPPING.gamma)


def _bucket_value(key: int) -> float:
    """``_MAPPING.value(key)`` with the library's operations (an interpreted method call less
    per quantile)."""
    return math.pow(2.0, (key - _OFFSET) / _MULTIPLIER) * _VALUE_FACTOR


class Sketch:
    """A DDSketch (relative accuracy ``SKETCH_ACCURACY``) of non-negative durations, with its
    bucket counts in a plain dict.

    The bucket of a value and the value of a bucket are the ``ddsketch`` library's
    ``LogarithmicMapping`` (what ``DDSketch(SKETCH_ACCURACY)`` uses), and quantiles follow its
    ``get_quantile_value`` (rank q * (n - 1), lower): the same answers and the same accuracy
    guarantee (property-tested against the library). The library's object costs about 15 us to
    create and 20 us per add through its dense store; a partial holds a few values and is
    created, merged and serialised all the time, so here an add is a dict increment.
    """

    __slots__ = ("bins", "count", "max", "min", "sum", "zero")

    def __init__(self) -> None:
        self.bins: dict[int, int] = {}
        self.zero = 0
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")

    def add(self, value: float) -> None:
        value = max(value, 0.0)
        if value > _MIN_VALUE:
            key = int(ceil(log(value, 2) * _MULTIPLIER) + _OFFSET)
            self.bins[key] = self.bins.get(key, 0) + 1
        else:
            self.zero += 1
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def merge(self, other: Sketch) -> None:
        bins = self.bins
        for key, n in other.bins.items():
            bins[key] = bins.get(key, 0) + n
        self.zero += other.zero
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def copy(self) -> Sketch:
        c = Sketch()
        c.bins = dict(self.bins)
        c.zero, c.count, c.sum, c.min, c.max = self.zero, self.count, self.sum, self.min, self.max
        return c

    def get_quantile_value(self, q: float) -> float | None:
        return self.quantiles((q,))[0]

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """Several quantiles from one pass over the sorted buckets."""
        if self.count == 0:
            return [None] * len(qs)
        keys = sorted(self.bins)
        out: list[float | None] = []
        for q in qs:
            if q < 0 or q > 1:
                out.append(None)
                continue
            rank = q * (self.count - 1)
            if rank < self.zero:
                out.append(0.0)
                continue
            rank -= self.zero
            running, value = 0, _bucket_value(keys[-1])
            for key in keys:
                running += self.bins[key]
                if running > rank:
                    value = _bucket_value(key)
                    break
            out.append(value)
        return out

    def to_state(self) -> dict[str, Any]:
        """Compact JSON: the non-empty buckets as sorted keys and their counts. A few values
        of durations from minutes to days span hundreds of buckets: the dense list earlier
        versions wrote (``lo`` and ``b``, still read) was most of a ticket partial's size and
        of its serialisation time."""
        keys = sorted(self.bins)
        bins = self.bins
        return {
            "k": keys,
            "c": [bins[k] for k in keys],
            "z": self.zero,
            "n": self.count,
            "s": self.sum,
            "mn": self.min if self.count else None,
            "mx": self.max if self.count else None,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Sketch:
        sk = cls()
        if "k" in data:
            sk.bins = dict(zip(data["k"], data["c"], strict=True))
        else:  # the dense layout before 2026-11-28
            lo = data["lo"]
            sk.bins = {lo + i: int(c) for i, c in enumerate(data["b"]) if c}
        sk.zero = int(data["z"])
        sk.count = int(data["n"])
        sk.sum = data["s"]
        if sk.count:
            sk.min, sk.max = data["mn"], data["mx"]
        return sk


class KpiPartial:
    """Partial state of one window x dimension; see the module docstring.

    Level series come in two forms: in a base partial, ``deltas[level]`` maps a second offset
    in the window to the net change at that second (so partitions add up exactly); after the
    merger has placed the window in its cumulative series, ``levels[level]`` is the absolute
    ``(start, end, peak)``.
    """

    # Counters default to the class-level 0 (set below) and live in the instance dict only once
    # touched: a partial usually holds a handful of the ~40 counters, and merging, serialising
    # and emptiness checks then iterate only those. Everything else has a slot, so the instance
    # dict holds the touched counters and nothing else.
    __slots__ = (
        "__dict__",
        "abandoned_within",
        "answered_within",
        "csat_wait",
        "deltas",
        "frt",
        "levels",
        "longest_wait",
        "not_ready_reasons",
        "resolution",
    )

    def __init__(self, n_thresholds: int) -> None:
        self.answered_within = [0] * n_thresholds
        self.abandoned_within = [0] * n_thresholds
        self.longest_wait = None
        self.not_ready_reasons: dict[str, float] = {}
        self.frt: Sketch | None = None
        self.resolution: Sketch | None = None
        self.deltas: dict[str, dict[int, int]] = {}
        self.levels: dict[str, tuple[int, int, int]] = {}
        self.csat_wait: dict[str, list[int]] = {}  # bucket -> [responses, score sum, top-2]

    # -- updates used by the source processors -------------------------------------------
    def add_wait(self, wait: float) -> None:
        if self.longest_wait is None or wait > self.longest_wait:
            self.longest_wait = wait

    def add_level(self, level: str, second: int, delta: int) -> None:
        series = self.deltas.get(level)
        if series is None:  # not ``setdefault(level, {})``, which builds a dict on every call
            series = self.deltas[level] = {}
        series[second] = series.get(second, 0) + delta

    @cython.locals(sketch=Sketch)  # compiled: a direct call of the extension type's ``add``
    def add_sketch(self, name: str, value: float) -> None:
        sketch = getattr(self, name)
        if sketch is None:
            sketch = Sketch()
            setattr(self, name, sketch)
        sketch.add(value)

    def add_csat_wait(self, bucket: str, csat: int) -> None:
        cell = self.csat_wait.setdefault(bucket, [0, 0, 0])
        cell[0] += 1
        cell[1] += csat
        cell[2] += 1 if csat >= 4 else 0

    # -- merging ---------------------------------------------------------------------------
    def _sums(self) -> list[tuple[str, float]]:
        return [(k, v) for k, v in self.__dict__.items() if v]  # the dict holds counters only

    def _fields(self) -> list[tuple[str, Any]]:
        """What this partial holds as (field, value) pairs, as ``merge`` reads them."""
        items = self._sums()
        items += [
            ("answered_within", self.answered_within),
            ("abandoned_within", self.abandoned_within),
            ("longest_wait", self.longest_wait),
            ("not_ready_reasons", self.not_ready_reasons),
            ("frt", self.frt),
            ("resolution", self.resolution),
            ("deltas", self.deltas),
            ("csat_wait", self.csat_wait),
            ("levels", self.levels),
        ]
        return items

    def merge(self, other: KpiPartial) -> KpiPartial:
        """Add ``other`` (same window, another source) into self. Associative, commutative."""
        return self._add(other._fields(), from_json=False)

    def merge_state(self, data: dict[str, Any]) -> KpiPartial:
        """``merge(KpiPartial.from_dict(data))`` without building the other partial: the merge
        stage adds up every source's partials of a window as they come off the topic."""
        return self._add(data.items(), from_json=True)

    def _add(self, fields: Iterable[tuple[str, Any]], from_json: bool) -> KpiPartial:
        """The one merge, in one pass over what the other side holds: another partial's
        ``_fields`` or its JSON form (``from_json``: level seconds are strings, level tuples
        lists, sketches their state, built here and adopted). A JSON form holds a handful of
        fields, and each is looked at once (unknown ones, from later versions, are skipped)."""
        mine = self.__dict__
        for name, v in fields:
            if name in _SUM_SET:
                mine[name] = mine.get(name, 0) + v
            elif name in THRESHOLD_SUMS:
                if v:
                    counts = getattr(self, name)
                    for i, n in enumerate(v):
                        counts[i] += n
            elif name == "longest_wait":
                if v is not None:
                    self.add_wait(v)
            elif name == "not_ready_reasons":
                reasons = self.not_ready_reasons
                for reason, secs in v.items():
                    reasons[reason] = reasons.get(reason, 0) + secs
            elif name in SKETCHES:
                if v is not None:
                    sketch = Sketch.from_state(v) if from_json else v
                    own = getattr(self, name)
                    if own is None:
                        setattr(self, name, sketch if from_json else sketch.copy())
                    else:
                        own.merge(sketch)
            elif name == "deltas":
                own_deltas = self.deltas
                for level, series in v.items():
                    if not series:
                        continue
                    mine_series = own_deltas.get(level)
                    if mine_series is None:  # a new dict, in the order of theirs (add_level's result)
                        own_deltas[level] = {int(second): d for second, d in series.items()}
                        continue
                    for second, d in series.items():
                        second = int(second)
                        mine_series[second] = mine_series.get(second, 0) + d
            elif name == "csat_wait":
                own_cells = self.csat_wait
                for bucket, (n, total, top2) in v.items():
                    cell = own_cells.get(bucket)
                    if cell is None:
                        cell = own_cells[bucket] = [0, 0, 0]
                    cell[0] += n
                    cell[1] += total
                    cell[2] += top2
            elif name == "levels" and v:
                if self.levels:
                    raise ValueError("parallel merge of absolute levels is undefined; merge deltas first")
                self.levels = {lv: tuple(x) for lv, x in v.items()}  # type: ignore[misc]
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
            setattr(p, name, None if sketch is None else sketch.copy())
        p.deltas = {lv: dict(series) for lv, series in self.deltas.items()}
        p.levels = dict(self.levels)
        p.csat_wait = {b: list(v) for b, v in self.csat_wait.items()}
        return p

    def to_message(self) -> dict[str, Any] | None:
        """``to_dict``, or None when the partial holds nothing but pause reasons or absolute
        levels (what a closing window leaves out of its message: one serialisation, no second
        pass over the counters to decide)."""
        d = self.to_dict()
        return None if _NOT_COUNTED.issuperset(d) else d

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        # every closing window serialises each of its partials (about one per event): the
        # fields by name, in the order of THRESHOLD_SUMS and SKETCHES, not looked up by string
        out: dict[str, Any] = {k: v for k, v in self.__dict__.items() if v}  # the touched counters
        if any(self.answered_within):
            out["answered_within"] = list(self.answered_within)
        if any(self.abandoned_within):
            out["abandoned_within"] = list(self.abandoned_within)
        if self.longest_wait is not None:
            out["longest_wait"] = self.longest_wait
        if self.not_ready_reasons:
            out["not_ready_reasons"] = dict(self.not_ready_reasons)
        if self.frt is not None:
            out["frt"] = self.frt.to_state()
        if self.resolution is not None:
            out["resolution"] = self.resolution.to_state()
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
                setattr(p, name, Sketch.from_state(data[name]))
        p.deltas = {lv: {int(s): d for s, d in series.items()} for lv, series in data.get("deltas", {}).items()}
        p.levels = {lv: tuple(v) for lv, v in data.get("levels", {}).items()}  # type: ignore[misc]
        p.csat_wait = {b: list(v) for b, v in data.get("csat_wait", {}).items()}
        return p


_SUM_SET = frozenset(SUMS)
_NOT_COUNTED = frozenset({"not_ready_reasons", "levels"})
for _name in SUMS:
    setattr(KpiPartial, _name, 0)
