"""Warning rules: a YAML file validated here (``CALLPULSE_WARNING_RULES``; default
``default_rules.yaml`` beside this module). Documented in ``docs/warnings.md``.

Three kinds of rule, all with three levels (yellow < orange < red):

* ``ThresholdRule``: a KPI over a rolling lookback (e.g. service level over the last 15 min,
  re-evaluated every base window) against enter/exit thresholds per level (hysteresis), with a
  minimum volume guard and a duration (consecutive evaluations) before a level is entered or left.
* ``SeasonalRule``: contact volume over the lookback against the volume expected for that
  hour of the week (learned online) and the recent level; surge and drop levels by ratio and
  robust z-score.
* ``StaffingRule``: agents staffed against the agents required for a service-level target on the
  forecast and on the actual load (Erlang C); levels by the share of required agents missing.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.records import WarningLevel

LEVELS: tuple[WarningLevel, ...] = (WarningLevel.yellow, WarningLevel.orange, WarningLevel.red)
RANK = {None: 0, WarningLevel.yellow: 1, WarningLevel.orange: 2, WarningLevel.red: 3}
DEFAULT_RULES = Path(__file__).with_name("default_rules.yaml")

Kpi = Literal[
    "service_level",
    "answer_rate",
    "abandon_rate",
    "asa_seconds",
    "longest_wait_seconds",
    "waiting",
    "occupancy",
    "backlog",
    "sla_breach_rate",
    "csat_mean",
]
RuleDimension = Literal["all", "queue", "channel", "business_type"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Band(Strict):
    """Enter a level when the value crosses ``enter``; leave it only once back past ``exit``."""

    enter: float
    exit: float


def check_bands(name: str, levels: dict[WarningLevel, Band], above: bool) -> None:
    """Each level's exit on the safe side of its enter (hysteresis), each level worse than the
    one below it. ``above``: higher values are worse."""
    if not levels:
        raise ValueError(f"{name}: a rule needs at least one level")
    worse = (lambda a, b: a > b) if above else (lambda a, b: a < b)
    bands = [(lv, levels[lv]) for lv in LEVELS if lv in levels]
    for lv, band in bands:
        if worse(band.exit, band.enter):
            raise ValueError(f"{name} {lv.value}: exit must be on the safe side of enter (hysteresis)")
    for (lo, a), (hi, b) in pairwise(bands):
        if not worse(b.enter, a.enter):
            raise ValueError(f"{name}: {hi.value} must be worse than {lo.value}")


def band_levels(
    value: float, levels: dict[WarningLevel, Band], above: bool
) -> tuple[WarningLevel | None, WarningLevel | None]:
    """(enter, hold): the worst level whose enter threshold ``value`` crosses, and the worst
    whose exit threshold it has not come back past."""
    enter = hold = None
    for lv in LEVELS:
        band = levels.get(lv)
        if band is None:
            continue
        if (value >= band.enter) if above else (value <= band.enter):
            enter = lv
        if (value >= band.exit) if above else (value <= band.exit):
            hold = lv
    return enter, hold


class ThresholdRule(Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    kpi: Kpi
    threshold_s: int | None = Field(default=None, description="service level: which answer-time threshold")
    direction: Literal["above", "below"]
    dimensions: list[RuleDimension] = ["queue"]
    lookback_s: int = Field(default=900, gt=0)
    min_volume: int = Field(default=0, ge=0, description="evaluate only with at least this many contacts")
    for_windows: int = Field(default=2, ge=1, description="consecutive evaluations before entering a level")
    clear_windows: int = Field(default=3, ge=1, description="consecutive evaluations before leaving a level")
    levels: dict[WarningLevel, Band]
    summary: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> ThresholdRule:
        check_bands(self.name, self.levels, self.direction == "above")
        if self.kpi == "service_level" and self.threshold_s is None:
            raise ValueError(f"{self.name}: a service level rule needs threshold_s")
        return self


class Deviation(Strict):
    """A surge (ratio >= ratio and z >= z) or drop (ratio <= ratio and z <= z) level."""

    ratio: float
    z: float
    exit_ratio: float


class SeasonalRule(Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    dimensions: list[RuleDimension] = ["all", "queue"]
    lookback_s: int = Field(default=900, gt=0)
    slot_s: int = Field(default=900, gt=0, description="profile resolution within the week")
    weeks: int = Field(default=5, ge=1, description="weeks of history per slot; the profile is their median")
    min_weeks: int = Field(default=1, ge=1, description="weeks a slot needs before it is trusted (cold start)")
    min_expected: float = Field(default=10.0, ge=0, description="no warning when fewer contacts are expected")
    level_half_life_s: float = Field(default=4 * 3600, gt=0, description="memory of the recent level")
    for_windows: int = 2
    clear_windows: int = 3
    surge: dict[WarningLevel, Deviation] = {}
    drop: dict[WarningLevel, Deviation] = {}
    summary: str = ""


class StaffingRule(Strict):
    """Understaffing: the agents staffed against the agents the target needs on the forecast and
    on the actual load (``streams/early_warning/staffing_gap.py``); levels by the shortfall, the
    share of required agents missing."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    dimensions: list[RuleDimension] = ["queue", "all"]
    interval_s: int = Field(default=900, gt=0, description="planning interval")
    target: float = Field(default=0.8, gt=0, lt=1, description="service level target")
    threshold_s: int = Field(default=20, gt=0, description="answer-time threshold of the target")
    max_occupancy: float | None = Field(default=0.9, gt=0, le=1)
    forecast_rule: str | None = Field(default=None, description="seasonal rule whose baseline forecasts volume")
    staffed_lookback_s: int = Field(default=180, gt=0)
    load_lookback_s: int = Field(default=900, gt=0)
    aht_lookback_s: int = Field(default=3600, gt=0)
    default_aht_s: float = Field(default=300.0, gt=0, description="AHT until contacts were handled")
    min_required: int = Field(default=3, ge=1, description="no warning where fewer agents are needed")
    for_windows: int = Field(default=2, ge=1)
    clear_windows: int = Field(default=3, ge=1)
    levels: dict[WarningLevel, Band]
    summary: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> StaffingRule:
        check_bands(self.name, self.levels, above=True)
        return self


class RuleSet(Strict):
    threshold: list[ThresholdRule] = []
    seasonal: list[SeasonalRule] = []
    staffing: list[StaffingRule] = []

    @model_validator(mode="after")
    def _unique(self) -> RuleSet:
        names = [r.name for r in [*self.threshold, *self.seasonal, *self.staffing]]
        if len(names) != len(set(names)):
            raise ValueError("rule names must be unique")
        seasonal = {r.name for r in self.seasonal}
        for r in self.staffing:
            if r.forecast_rule is not None and r.forecast_rule not in seasonal:
                raise ValueError(f"{r.name}: forecast_rule {r.forecast_rule!r} is not a seasonal rule")
        return self


def load_rules(path: Path | None = None) -> RuleSet:
    return RuleSet.model_validate(yaml.safe_load((path or DEFAULT_RULES).read_text()))
