"""The live staffing gap: agents needed for the traffic that is coming versus agents on the floor.

Per dimension value, at every base window (pure; fed by the detector):

* **staffed** = agents ready, busy or in after-call work, averaged over the last
  ``staffed_lookback_s`` (agent-seconds in those states / seconds). Agents logged into several
  queues count in each of them: a queue's staffed figure is the capacity that *can* serve it, so
  a per-queue gap is a lower bound of the real shortfall; the ``all`` row pools every agent and
  every contact;
* **AHT** over the last ``aht_lookback_s`` (talk + hold + ACW of handled contacts), the rule's
  ``default_aht_s`` until contacts were handled;
* **required on the forecast**: Erlang C agents for the target (e.g. 80 % in 20 s, occupancy
  cap) on the next interval's forecast (``streams.forecast``), when the seasonal profile is
  trusted; **required on the actual load**: the same on the contacts offered over the last
  ``load_lookback_s``, scaled to one interval;
* **gap** = max(required) - staffed, **shortfall** = gap / max(required) (what the warning
  levels compare), and **expected service level**: Erlang C's service level with the agents
  staffed now on the larger load (0 when they cannot keep up at all: load >= agents).

Per closed interval (``interval_s``) the same figures over the interval become a
``StaffingRecord`` (topic ``cc.staffing``, table ``staffing_interval``), with the forecast made
when the interval started and the rolling WAPE of those forecasts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.records import StaffingRecord
from streams.early_warning.rolling import LookbackKpis, WindowCounts, ending_after
from streams.early_warning.rules import StaffingRule
from streams.forecast import Forecast
from streams.staffing import ErlangC


@dataclass(frozen=True)
class StaffingGap:
    t: float
    staffed: float
    aht_s: float
    actual_volume: float  # offered over the load lookback, scaled to one interval
    forecast: Forecast | None
    required_forecast: int | None
    required_actual: int | None
    expected_service_level: float | None

    @property
    def required(self) -> int | None:
        values = [r for r in (self.required_forecast, self.required_actual) if r is not None]
        return max(values) if values else None

    @property
    def gap(self) -> float | None:
        return None if self.required is None else self.required - self.staffed

    @property
    def shortfall(self) -> float:
        """Share of the required agents missing (0 when staffed enough)."""
        req = self.required
        return max(0.0, (req - self.staffed) / req) if req else 0.0


def _required(rule: StaffingRule, volume: float, aht_s: float) -> int:
    traffic = ErlangC(volume, rule.interval_s, aht_s)
    return traffic.required_agents(rule.target, rule.threshold_s, rule.max_occupancy)


def expected_service_level(rule: StaffingRule, volume: float, aht_s: float, staffed: float) -> float | None:
    """Erlang C service level with the whole agents staffed now; 0 when the queue is unstable."""
    if volume <= 0:
        return None
    traffic = ErlangC(volume, rule.interval_s, aht_s)
    agents = math.floor(staffed + 1e-9)
    if agents <= traffic.load:
        return 0.0
    return traffic.service_level(agents, rule.threshold_s)


def staffed_agents(windows: list[WindowCounts], seconds: float) -> float:
    return sum(w.available_s for w in windows) / seconds if seconds > 0 else 0.0


def evaluate_gap(
    rule: StaffingRule,
    windows: list[WindowCounts],
    base_s: int,
    t: float,
    fc: Forecast | None,
) -> StaffingGap:
    """The gap at time ``t`` (a base window end) from the dimension value's recent windows."""

    def over(lookback: int) -> list[WindowCounts]:
        return ending_after(windows, t - lookback)

    staffed_w = over(rule.staffed_lookback_s)
    load_w = over(rule.load_lookback_s)
    staffed = staffed_agents(staffed_w, len(staffed_w) * base_s)
    aht = LookbackKpis(over(rule.aht_lookback_s), (), "").value("aht_seconds") or rule.default_aht_s
    if len(staffed_w) * base_s < rule.staffed_lookback_s or len(load_w) * base_s < rule.load_lookback_s:
        # just started (or restarted without state): a few minutes scaled up are noise, not a rate
        return StaffingGap(t, staffed, aht, 0.0, fc, None, None, None)
    seconds = len(load_w) * base_s
    actual = sum(w.offered for w in load_w) * rule.interval_s / seconds
    req_fc = _required(rule, fc.volume, aht) if fc is not None else None
    req_actual = _required(rule, actual, aht)
    volume = max(actual, fc.volume if fc is not None else 0.0)
    sl = expected_service_level(rule, volume, aht, staffed)
    return StaffingGap(t, staffed, aht, actual, fc, req_fc, req_actual, sl)


def interval_record(
    rule: StaffingRule,
    key: tuple[str, str],
    windows: list[WindowCounts],
    base_s: int,
    start: float,
    fc: Forecast | None,
    thresholds: tuple[int, ...],
    variant: str,
    wape: float | None,
) -> StaffingRecord:
    """The staffing figures of one closed interval ``[start, start + interval_s)`` from its base
    windows."""
    k = LookbackKpis(windows, thresholds, variant)
    actual = sum(w.offered for w in windows)
    aht = k.value("aht_seconds") if k.volume("aht_seconds") > 0 else None
    staffed = staffed_agents(windows, len(windows) * base_s) if windows else None
    plan_aht = aht or rule.default_aht_s
    req_fc = _required(rule, fc.volume, plan_aht) if fc is not None else None
    req_actual = _required(rule, actual, plan_aht) if windows else None
    required = max([r for r in (req_fc, req_actual) if r is not None], default=None)
    sl = None
    if thresholds and rule.threshold_s in thresholds and k.volume("service_level") > 0:
        sl = k.value("service_level", rule.threshold_s)
    return StaffingRecord(
        interval_start=datetime.fromtimestamp(start, UTC),
        interval_end=datetime.fromtimestamp(start + rule.interval_s, UTC),
        interval_s=rule.interval_s,
        dimension=key[0],  # type: ignore[arg-type]
        dimension_value=key[1],
        windows=len(windows),
        forecast_contacts=fc.volume if fc else None,
        forecast_low=fc.low if fc else None,
        forecast_high=fc.high if fc else None,
        offered=actual,
        aht_seconds=aht,
        required_agents_forecast=req_fc,
        required_agents_actual=req_actual,
        staffed_agents=staffed,
        gap_agents=(required - staffed) if required is not None and staffed is not None else None,
        expected_service_level=(
            expected_service_level(rule, actual, plan_aht, staffed) if staffed is not None else None
        ),
        service_level=sl,
        target_service_level=rule.target,
        threshold_s=rule.threshold_s,
        forecast_wape=wape,
    )
