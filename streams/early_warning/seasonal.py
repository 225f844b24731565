"""Expected contact volume from an hour-of-week profile and the recent level, learned online.

For each dimension value and slot of the week (15 minutes by default) the baseline keeps the
volume per base window of that slot in each of the last ``weeks`` weeks; the profile is their
median. A slot is committed to the profile only once it is over, so a surge never raises its own
expectation while it happens, and the median ignores a single unusual week (a holiday, last
week's incident): the profile is robust to the anomalies themselves. ``level`` is how busy the
recent slots were against the profile (an EWMA with a half-life, updated only by slots that were
not anomalous), so a generally busier day does not alarm. Expected volume over a lookback = sum
over its windows of ``profile[slot] * level``. Cold start: a slot is trusted only with at least
``min_weeks`` weeks of history; until then nothing is judged, and the detector says so.

Persisted as two entries: the profile (with the level and dispersion, which change only when a
slot is committed) is written when it changed, the open slot every window; the worker sends the
profile first. ``upto`` (the last window observed) and ``committed`` (the last slot committed)
make a replay after a crash idempotent whichever of the two entries became durable: a window
already observed, or a slot already in the profile, is not counted again.

Deviation: ``ratio = observed / expected`` and a variance-stabilised z-score (``deviation``):
counts are roughly Poisson, plus the over-dispersion learned from past slots and the uncertainty
of the profile (large while a slot has little history).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import median
from typing import Any

WEEK_S = 7 * 86_400
# 1970-01-01 was a Thursday: shift so that slot 0 starts on Monday 00:00 UTC
_MONDAY_OFFSET = 3 * 86_400


def slot_of(t: float, slot_s: int) -> int:
    return int(((t + _MONDAY_OFFSET) % WEEK_S) // slot_s)


def deviation(observed: float, expected: float, extra_variance: float = 0.0) -> tuple[float, float]:
    """(ratio, z) of an observed count against its expectation. The z-score is Anscombe's
    variance-stabilised difference ``2 (sqrt(O + 3/8) - sqrt(E + 3/8))`` (about N(0, 1) for
    Poisson counts, and well calibrated for small ones: silence where 12 contacts are expected is
    z = -5.8, not the -3.3 of a plain z-score), scaled down by the extra variance (over-dispersion
    and the uncertainty of the learned expectation)."""
    z = 2 * (math.sqrt(observed + 0.375) - math.sqrt(expected + 0.375))
    return observed / max(expected, 1e-9), z / math.sqrt(1.0 + extra_variance / max(expected, 1.0))


@dataclass
class SeasonalBaseline:
    slot_s: int
    window_s: int
    weeks: int
    min_weeks: int
    half_life_s: float
    history: dict[int, list[float]] = field(default_factory=dict)  # slot -> per-window volume, last weeks
    level: float = 1.0
    dispersion: float = 1.0  # variance / mean of a slot's volume beyond Poisson, learned
    acc: list[float] = field(default_factory=lambda: [-1, 0.0, 0.0])  # open slot: [slot start, volume, windows]
    upto: float | None = None  # start of the last window observed
    committed: float | None = None  # start of the last slot committed to the profile
    profile_changed: bool = False

    # -- expectations ---------------------------------------------------------------------------
    def profile(self, slot: int) -> float | None:
        h = self.history.get(slot)
        return median(h) if h else None

    def trusted(self, start: float, end: float) -> bool:
        """Whether every slot holding a window start in [start, end) has ``min_weeks`` of history.
        Each slot is looked up once: from a window start, the next one checked is the first in
        the next slot (a lookback of an hour is 60 windows but 4 or 5 slots)."""
        t, stop, step, slot_s = int(start), int(end), self.window_s, self.slot_s
        while t < stop:
            if len(self.history.get(slot_of(t, slot_s), ())) < self.min_weeks:
                return False
            pos = (t + _MONDAY_OFFSET) % WEEK_S  # where t is in the week
            # the slot changes at its end or at the end of the week, whichever comes first
            change = t + min((pos // slot_s + 1) * slot_s, WEEK_S) - pos
            t += -(-(change - t) // step) * step  # the first window start at or after it
        return True

    def expected(self, start: float, end: float) -> tuple[float, float]:
        """Expected volume in [start, end) (base window starts), profile x level, and the extra
        variance beyond Poisson: over-dispersion, plus the profile's uncertainty (a median of k
        weekly means of a slot with n windows has variance ~ pi/2 * m / (k n))."""
        per_slot: dict[int, int] = {}
        for t in self._starts(start, end):
            slot = slot_of(t, self.slot_s)
            per_slot[slot] = per_slot.get(slot, 0) + 1
        per_week = self.slot_s / self.window_s
        exp = var = 0.0
        for slot, k in per_slot.items():
            m = (self.profile(slot) or 0.0) * self.level
            exp += k * m
            weeks = max(len(self.history.get(slot, ())), 1)
            var += k * k * self.dispersion * m * (math.pi / 2) / (weeks * per_week)
        return exp, var + (self.dispersion - 1.0) * exp

    def _starts(self, start: float, end: float) -> range:
        return range(int(start), int(end), self.window_s)

    # -- learning -------------------------------------------------------------------------------
    def observe(self, t: float, volume: float) -> None:
        """One base window starting at ``t`` with ``volume`` contacts. Accumulates the open slot;
        a finished slot is committed to the profile. A window observed before is ignored."""
        if self.upto is not None and t <= self.upto:
            return
        self.upto = t
        slot_start = t - ((t + _MONDAY_OFFSET) % self.slot_s)
        if slot_start != self.acc[0]:
            self._commit()
            self.acc = [slot_start, 0.0, 0.0]
        self.acc[1] += volume
        self.acc[2] += 1

    def _commit(self) -> None:
        start, volume, windows = self.acc
        if start < 0 or windows == 0 or (self.committed is not None and start <= self.committed):
            return  # nothing, or a slot the durable profile already has (a replay after a crash)
        self.committed = start
        slot = slot_of(start, self.slot_s)
        per_window = volume / windows
        prof = self.profile(slot)
        if prof is not None and len(self.history[slot]) >= self.min_weeks and prof > 0:
            exp = prof * self.level * windows
            weeks = len(self.history[slot])
            # the profile is itself an estimate: its variance is part of the observed spread
            estimate_var = (math.pi / 2) * self.dispersion * exp / weeks
            _, z = deviation(volume, exp, (self.dispersion - 1.0) * exp + estimate_var)
            if abs(z) < 3:  # an anomalous slot moves neither the level nor the dispersion
                decay = 0.5 ** (self.slot_s / self.half_life_s)
                self.level = decay * self.level + (1 - decay) * min(max(per_window / prof, 0.5), 2.0)
                spread = (volume - exp) ** 2 / (exp + estimate_var + 1.0)
                self.dispersion = max(1.0, self.dispersion + 0.05 * (spread - self.dispersion))
        h = self.history.setdefault(slot, [])
        h.append(per_window)
        del h[: -self.weeks]
        self.profile_changed = True

    # -- state ----------------------------------------------------------------------------------
    def dump_profile(self) -> dict[str, Any]:
        return {
            "slots": {str(k): list(v) for k, v in self.history.items()},  # copies: they change in place
            "committed": self.committed,
            "level": self.level,
            "dispersion": self.dispersion,
        }

    def dump_recent(self) -> list[Any]:
        return [self.level, self.dispersion, *self.acc, self.upto]

    def load(self, profile: dict[str, Any] | None, recent: list[Any] | None) -> None:
        """From ``dump_profile`` and ``dump_recent`` (either may be missing). A profile of the
        earlier layout is the slots alone, and its level and dispersion are the open slot's."""
        if recent is not None:
            self.level, self.dispersion = float(recent[0]), float(recent[1])
            self.acc = [float(x) for x in recent[2:5]]
            self.upto = recent[5] if len(recent) > 5 else None
        if profile is not None:
            slots = profile.get("slots", profile)
            self.history = {int(k): [float(x) for x in v] for k, v in slots.items()}
            if "slots" in profile:
                # the profile is as new as the last commit, the open slot maybe older (a crash
                # between the two entries): the level and dispersion of that commit are these
                self.committed = profile["committed"]
                self.level, self.dispersion = float(profile["level"]), float(profile["dispersion"])
