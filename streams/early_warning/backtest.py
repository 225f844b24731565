"""Backtest: replay data through the same detector code and score it against labelled incidents.

Two inputs:
* contact-center events (JSONL): replayed through the KPI engine and merger in-process
  (``streams.pipeline.LocalPipeline``, the worker's code without Kafka), the final records fed to
  ``EarlyWarningDetector`` in emission order, as the worker does;
* a plain time series (CSV ``timestamp,value``): each row becomes one base window of volume
  ``value`` for dimension ``all``, so the seasonal rule can be measured on public labelled data
  (NAB's ``combined_windows.json`` format is read as it is).

Scoring, per rule and overall. A warning *episode* is one warning id from opened to resolved.
An episode is a true positive when it overlaps an incident window extended by ``allowance_s``
(and names the incident's queue, or ``all``). Precision = true-positive episodes / episodes.
Recall = incidents matched by at least one episode; red recall = matched by an episode that
reached red. Detection delay = when the first matching episode opened minus the incident start
(0 if it was already open); for NAB windows, minus the labelled anomaly time (the window's
middle), so a negative delay is a warning inside the window before the labelled point. Alert
fatigue = episodes per day.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from schemas.records import KpiRecord, WarningRecord
from streams.early_warning.detector import EarlyWarningDetector


@dataclass(frozen=True)
class Incident:
    start: float
    end: float
    kind: str = "incident"
    queue: str | None = None
    anchor: float | None = None  # NAB: the labelled anomaly time (its window's middle)


@dataclass
class Episode:
    warning_id: str
    rule: str
    dimension: str
    value: str
    start: float
    end: float | None = None
    max_level: int = 0
    red_at: float | None = None


@dataclass
class RuleScore:
    episodes: int = 0
    true_positives: int = 0
    incidents: int = 0
    detected: int = 0
    detected_red: int = 0
    delays_s: list[float] = field(default_factory=list)
    red_outside_incidents: int = 0

    def as_dict(self, days: float) -> dict[str, Any]:
        d = sorted(self.delays_s)
        return {
            "episodes": self.episodes,
            "precision": round(self.true_positives / self.episodes, 3) if self.episodes else None,
            "recall": round(self.detected / self.incidents, 3) if self.incidents else None,
            "red_recall": round(self.detected_red / self.incidents, 3) if self.incidents else None,
            "median_delay_s": d[len(d) // 2] if d else None,
            "max_delay_s": d[-1] if d else None,
            "red_outside_incidents": self.red_outside_incidents,
            "warnings_per_day": round(self.episodes / days, 2) if days else None,
        }


RANKS = {"yellow": 1, "orange": 2, "red": 3}


def episodes_of(warnings: Iterable[WarningRecord]) -> list[Episode]:
    out: dict[str, Episode] = {}
    for w in warnings:
        e = out.get(w.warning_id)
        if e is None:
            e = out[w.warning_id] = Episode(
                w.warning_id, w.rule, w.dimension, w.dimension_value, w.started_at.timestamp()
            )
        if w.level is not None:
            rank = RANKS[w.level.value]
            if rank == 3 and e.red_at is None:
                e.red_at = w.updated_at.timestamp()
            e.max_level = max(e.max_level, rank)
        if w.change == "resolved":
            e.end = w.updated_at.timestamp()
    return list(out.values())


def _matches(e: Episode, inc: Incident, allowance_s: float) -> bool:
    end = e.end if e.end is not None else float("inf")
    overlaps = e.start <= inc.end + allowance_s and end >= inc.start
    where = inc.queue is None or e.dimension == "all" or (e.dimension == "queue" and e.value == inc.queue)
    return overlaps and where


def score(
    warnings: Sequence[WarningRecord], incidents: Sequence[Incident], days: float, allowance_s: float = 1800
) -> dict[str, Any]:
    eps = episodes_of(warnings)
    rules = sorted({e.rule for e in eps})
    out: dict[str, Any] = {}
    for name in [*rules, "overall"]:
        mine = eps if name == "overall" else [e for e in eps if e.rule == name]
        s = RuleScore(episodes=len(mine), incidents=len(incidents))
        for e in mine:
            hit = any(_matches(e, inc, allowance_s) for inc in incidents)
            s.true_positives += hit
            if e.max_level == 3 and not hit:
                s.red_outside_incidents += 1
        for inc in incidents:
            hits = [e for e in mine if _matches(e, inc, allowance_s)]
            if hits:
                s.detected += 1
                first = min(e.start for e in hits)
                if inc.anchor is None:
                    s.delays_s.append(max(0.0, first - inc.start))
                else:  # relative to the labelled point; negative = warned before it, inside the window
                    s.delays_s.append(first - inc.anchor)
            if any(e.red_at is not None for e in hits):
                s.detected_red += 1
        out[name] = s.as_dict(days)
    return out


# -- inputs -------------------------------------------------------------------------------------
def load_incidents(path: Path, series: Path | None = None) -> list[Incident]:
    """Our labels (a list of ``{kind, queue, start, end}``, as ``callpulse simulate --labels``
    writes) or NAB's ``combined_windows.json`` (the entry whose key ends with the series' name)."""
    doc = json.loads(path.read_text())
    if isinstance(doc, list):
        return [Incident(_ts(d["start"]), _ts(d["end"]), d.get("kind", "incident"), d.get("queue")) for d in doc]
    assert series is not None, "NAB labels need the series file to pick its windows"
    key = next((k for k in doc if series.as_posix().endswith(k)), None)
    if key is None:
        raise KeyError(f"no labels for {series} in {path}")
    return [Incident(_ts(a), _ts(b), "nab_window", anchor=(_ts(a) + _ts(b)) / 2) for a, b in doc[key]]


def _ts(text: str) -> float:
    t = datetime.fromisoformat(text.replace(" ", "T"))
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def read_series(path: Path, time_column: str = "timestamp", value_column: str = "value") -> list[tuple[float, float]]:
    """A CSV time series as (epoch seconds, value) in time order; times without a zone are UTC."""
    with path.open(newline="") as f:
        return sorted((_ts(r[time_column]), float(r[value_column])) for r in csv.DictReader(f))


def series_records(path: Path) -> tuple[list[KpiRecord], int]:
    """A CSV ``timestamp,value`` series as base-window records (volume = value); returns the
    records and the series interval in seconds."""
    rows = read_series(path)
    step = int(min(b[0] - a[0] for a, b in pairwise(rows)))
    records = [
        KpiRecord.model_construct(
            window_size_s=step,
            window_start=datetime.fromtimestamp(t, UTC),
            window_end=datetime.fromtimestamp(t + step, UTC),
            dimension="all",
            dimension_value="",
            offered=round(v),
        )
        for t, v in rows
    ]
    return records, step


def run_detector(detector: EarlyWarningDetector, records: Iterable[KpiRecord]) -> list[WarningRecord]:
    """Records in emission order, grouped per window end as the merger emits them."""
    out: list[WarningRecord] = []
    batch: list[KpiRecord] = []
    last = None
    for r in records:
        if last is not None and r.window_end != last and batch:
            out.extend(detector.observe(batch))
            batch = []
        batch.append(r)
        last = r.window_end
    out.extend(detector.observe(batch))
    return out


def span_days(records: Sequence[KpiRecord]) -> float:
    if not records:
        return 0.0
    lo = min(r.window_start for r in records)
    hi = max(r.window_end for r in records)
    return (hi - lo) / timedelta(days=1)
