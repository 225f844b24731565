"""The warning lifecycle: one open warning per (rule, dimension value), with durations.

Each evaluation brings two levels: ``enter`` (the worst level whose enter condition holds now)
and ``hold`` (the worst level whose exit condition has not been reached yet; ``hold >= enter``).
A warning escalates to a higher level after ``for_windows`` consecutive evaluations at or above
it (to the lowest level seen during that streak), and de-escalates or resolves after
``clear_windows`` consecutive evaluations whose ``hold`` is below the current level. Every
change is a ``WarningRecord``; the warning id is deterministic (rule, dimension, start), so a
replay after a crash produces the same records and ClickHouse keeps them once.

``upto`` is the end of the last base window every lifecycle has been stepped through (the
detector advances it): a step for a window at or before it is a replay after a crash whose
tracker entry was already durable, and changes nothing. Without it, the streaks of a replayed
window would count twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.records import WarningLevel, WarningRecord
from streams.early_warning.rules import LEVELS, RANK

_BY_RANK = {RANK[lv]: lv for lv in LEVELS}


@dataclass
class Evaluation:
    enter: WarningLevel | None
    hold: WarningLevel | None
    value: float | None
    threshold: float | None = None
    expected: float | None = None
    # the text, or a function making it: called only when the evaluation changes a warning
    reason: str | Callable[[], str] = ""


@dataclass
class WarningState:
    level: int = 0  # rank of the open warning's level, 0 = none
    started_at: float | None = None
    up_streak: int = 0
    up_min: int = 0  # lowest enter rank seen during the current up streak
    down_streak: int = 0
    down_max: int = 0  # highest hold rank seen during the current down streak


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


class WarningTracker:
    def __init__(self) -> None:
        self.states: dict[tuple[str, str, str], WarningState] = {}
        self.upto: float | None = None

    def is_open(self, rule: str, dimension: str, value: str) -> bool:
        s = self.states.get((rule, dimension, value))
        return s is not None and s.level > 0

    def open_warnings(self) -> dict[tuple[str, str, str], WarningLevel]:
        return {k: _BY_RANK[s.level] for k, s in self.states.items() if s.level}

    def step(
        self,
        rule: str,
        kpi: str,
        dimension: str,
        value: str,
        ev: Evaluation,
        t: float,
        for_windows: int,
        clear_windows: int,
    ) -> WarningRecord | None:
        if self.upto is not None and t <= self.upto:
            return None  # stepped through before a crash (see the module docstring)
        key = (rule, dimension, value)
        enter, hold = RANK[ev.enter], max(RANK[ev.hold], RANK[ev.enter])
        s = self.states.get(key)
        if s is None:
            if not enter:
                return None  # no warning, no streak, nothing entered: nothing to track
            s = self.states[key] = WarningState()
        change = None
        if enter > s.level:
            s.up_min = enter if s.up_streak == 0 else min(s.up_min, enter)
            s.up_streak += 1
            if s.up_streak >= for_windows:
                change = "opened" if s.level == 0 else "escalated"
                if s.level == 0:
                    s.started_at = t
                s.level = s.up_min
                s.up_streak = 0
        else:
            s.up_streak = 0
        if change is None and s.level and hold < s.level:
            s.down_max = hold if s.down_streak == 0 else max(s.down_max, hold)
            s.down_streak += 1
            if s.down_streak >= clear_windows:
                s.level = s.down_max
                change = "de-escalated" if s.level else "resolved"
                s.down_streak = 0
        elif change is not None or (s.level and hold >= s.level):
            s.down_streak = 0
        if change is None:
            if not s.level and not s.up_streak:
                self.states.pop(key, None)
            return None
        assert s.started_at is not None
        record = WarningRecord(
            warning_id=warning_id(rule, dimension, value, s.started_at),
            rule=rule,
            kpi=kpi,
            dimension=dimension,  # type: ignore[arg-type]
            dimension_value=value,
            level=_BY_RANK[s.level] if s.level else None,
            change=change,  # type: ignore[arg-type]
            value=ev.value,
            threshold=ev.threshold,
            expected=ev.expected,
            started_at=_dt(s.started_at),
            updated_at=_dt(t),
            resolved_at=_dt(t) if change == "resolved" else None,
            reason=ev.reason if isinstance(ev.reason, str) else ev.reason(),
        )
        if change == "resolved":
            self.states.pop(key, None)
        return record

    def dump(self) -> dict[str, Any]:
        return {"upto": self.upto, "states": [[*k, asdict(s)] for k, s in self.states.items()]}

    def load(self, data: dict[str, Any] | list[Any]) -> None:
        """From ``dump``; a plain list of states is the layout before ``upto`` (no replay guard)."""
        items = data if isinstance(data, list) else data["states"]
        self.upto = None if isinstance(data, list) else data["upto"]
        self.states = {(r, d, v): WarningState(**s) for r, d, v, s in items}


def warning_id(rule: str, dimension: str, value: str, started_at: float) -> str:
    text = f"{rule}|{dimension}|{value}|{int(started_at)}"
    return "w-" + hashlib.sha256(text.encode()).hexdigest()[:20]
