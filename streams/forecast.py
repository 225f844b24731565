"""Interval volume forecasts from the surge detector's seasonal baseline, and how good they are.

Planners staff in 15- or 30-minute intervals. The forecast for an interval is the expectation
the volume-anomaly rule already keeps (``streams.early_warning.seasonal``): the median of the
last weeks' volume in the same slot of the week, times the recent level (how busy today is
against that profile). One model serves both uses, so the forecast the staffing gap is computed
on is the same expectation the surge warning compares against.

Prediction interval: the baseline's variance (Poisson, plus the learned over-dispersion, plus
the uncertainty of the median), as a normal interval around the expectation (``coverage`` 80 %
by default). The backtest reports how often the actual volume fell inside it.

Accuracy, kept as a KPI: WAPE = sum |actual - forecast| / sum actual (robust when some intervals
are nearly empty, unlike MAPE, which is reported too, over intervals with actual > 0).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from statistics import NormalDist
from typing import Any

from streams.early_warning.seasonal import WEEK_S, SeasonalBaseline


@dataclass(frozen=True)
class Forecast:
    """Expected contacts in ``[start, end)`` with a prediction interval."""

    start: float
    end: float
    volume: float
    low: float
    high: float


def forecast(baseline: SeasonalBaseline, start: float, end: float, coverage: float = 0.8) -> Forecast | None:
    """The baseline's expectation for ``[start, end)``; None while the slots have too little
    history (cold start: the caller falls back to the actual load)."""
    if not baseline.trusted(start, end):
        return None
    volume, extra = baseline.expected(start, end)
    z = NormalDist().inv_cdf(0.5 + coverage / 2)
    sd = math.sqrt(volume + extra)
    return Forecast(start, end, volume, max(0.0, volume - z * sd), volume + z * sd)


@dataclass
class ForecastAccuracy:
    """Rolling WAPE and MAPE over the last ``keep`` closed intervals of one dimension value."""

    keep: int = 96  # one day of 15-minute intervals
    errors: deque[tuple[float, float]] = field(default_factory=deque)  # (forecast, actual)

    def add(self, forecast_volume: float, actual: float) -> None:
        self.errors.append((forecast_volume, actual))
        while len(self.errors) > self.keep:
            self.errors.popleft()

    def wape(self) -> float | None:
        return wape(self.errors)

    def mape(self) -> float | None:
        return mape(self.errors)

    def dump(self) -> list[Any]:
        return [self.keep, [list(e) for e in self.errors]]

    @classmethod
    def load(cls, data: list[Any]) -> ForecastAccuracy:
        return cls(int(data[0]), deque((float(f), float(a)) for f, a in data[1]))


def wape(pairs: Iterable[tuple[float, float]]) -> float | None:
    """sum |actual - forecast| / sum actual over (forecast, actual) pairs."""
    err = total = 0.0
    for f, a in pairs:
        err += abs(a - f)
        total += a
    return err / total if total > 0 else None


def mape(pairs: Iterable[tuple[float, float]]) -> float | None:
    """Mean of |actual - forecast| / actual over pairs with actual > 0."""
    terms = [abs(a - f) / a for f, a in pairs if a > 0]
    return sum(terms) / len(terms) if terms else None


# -- rolling-origin backtest ---------------------------------------------------------------------
@dataclass
class HorizonScore:
    """Errors of one method at one horizon (h intervals ahead of the forecast origin)."""

    pairs: list[tuple[float, float]] = field(default_factory=list)
    covered: int | None = None  # intervals inside the prediction interval (methods that have one)

    def as_dict(self) -> dict[str, Any]:
        w, m = wape(self.pairs), mape(self.pairs)
        return {
            "intervals": len(self.pairs),
            "wape": round(w, 4) if w is not None else None,
            "mape": round(m, 4) if m is not None else None,
            "coverage": round(self.covered / len(self.pairs), 3) if self.pairs and self.covered is not None else None,
        }


@dataclass
class BacktestReport:
    interval_s: int
    step_s: int
    origins: int
    days: int
    callpulse: dict[int, HorizonScore]
    seasonal_naive: dict[int, HorizonScore]

    def as_dict(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "step_s": self.step_s,
            "days": self.days,
            "origins": self.origins,
            "horizons": {
                str(h): {
                    "callpulse": self.callpulse[h].as_dict(),
                    "seasonal_naive": self.seasonal_naive[h].as_dict(),
                }
                for h in sorted(self.callpulse)
            },
        }


def backtest(
    series: Sequence[tuple[float, float]],
    interval_s: int = 900,
    horizons: Sequence[int] = (1, 4),
    weeks: int = 5,
    half_life_s: float = 4 * 3600,
    warmup_days: int = 35,
    coverage: float = 0.8,
) -> BacktestReport:
    """Rolling origin: at every interval boundary after ``warmup_days``, forecast the intervals
    ``h`` ahead (h = 1 is the interval starting now) from what was observed before the origin,
    and compare with what then happened. The seasonal-naive baseline forecasts the same slot one
    week earlier. Both are scored on the same intervals: those with a complete actual and a
    complete week-earlier value (holidays and the partial last bin of a day drop out), and a
    trusted callpulse forecast. ``series`` is (bin start, volume) in time order, equally spaced."""
    step = int(min(b[0] - a[0] for a, b in pairwise(series)))
    if interval_s % step:
        raise ValueError(f"interval {interval_s}s is not a multiple of the series step {step}s")
    volume = dict(series)
    per = interval_s // step
    base = SeasonalBaseline(interval_s, step, weeks, 1, half_life_s)
    ours = {h: HorizonScore(covered=0) for h in horizons}
    naive = {h: HorizonScore() for h in horizons}
    first = series[0][0]
    origins = 0

    def total(start: float) -> float | None:
        values = [volume.get(start + k * step) for k in range(per)]
        return None if any(v is None for v in values) else float(sum(values))  # type: ignore[arg-type]

    for t, v in series:
        if t % interval_s == 0 and t - first >= warmup_days * 86_400:
            origins += 1
            for h in horizons:
                start = t + (h - 1) * interval_s
                actual, last_week = total(start), total(start - WEEK_S)
                fc = forecast(base, start, start + interval_s, coverage)
                if actual is None or last_week is None or fc is None:
                    continue
                ours[h].pairs.append((fc.volume, actual))
                ours[h].covered = (ours[h].covered or 0) + (fc.low <= actual <= fc.high)
                naive[h].pairs.append((last_week, actual))
        base.observe(t, v)
    days = len({int(t // 86_400) for t, _ in series})
    return BacktestReport(interval_s, step, origins, days, ours, naive)
