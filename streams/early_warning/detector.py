"""``EarlyWarningDetector``: final base-window KPI records in, warning changes out.

Feed it every final record of the base window size (all dimension values, in window order);
other sizes are ignored. Per dimension value it keeps the recent base windows (``rolling``), per
seasonal rule and value an hour-of-week baseline (``seasonal``), per staffing rule and value the
forecast of the running interval and the forecast accuracy (``staffing_gap``), and one
lifecycle per rule and value (``tracker``). Closed planning intervals leave as
``StaffingRecord``s (``drain_staffing``). Its state is a set of JSON-able entries, returned by ``drain_state`` only
for what changed, so the worker persists a handful of small entries per window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple
from itertools import groupby
from typing import Any

from schemas.records import KpiRecord, StaffingRecord, WarningLevel, WarningRecord
from streams.early_warning.rolling import LookbackKpis, Rolling, WindowCounts, ending_after
from streams.early_warning.rules import (
    LEVELS,
    RuleSet,
    SeasonalRule,
    StaffingRule,
    ThresholdRule,
    band_levels,
    load_rules,
)
from streams.early_warning.seasonal import SeasonalBaseline, deviation
from streams.early_warning.staffing_gap import StaffingGap, evaluate_gap, interval_record
from streams.early_warning.tracker import Evaluation, WarningTracker
from streams.forecast import Forecast, ForecastAccuracy, forecast
from streams.kpis import epoch_s

Key = tuple[str, str]  # (dimension, value)

# the three-level emergency plan a surge warning names
EMERGENCY_PLAN = {
    WarningLevel.yellow: "level 1: call in backup agents",
    WarningLevel.orange: "level 2: borrow agents from other lines",
    WarningLevel.red: "level 3: IVR deflection and callback",
}


def _fmt(kpi: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    if kpi.endswith("_rate") or kpi in ("service_level", "occupancy"):
        return f"{100 * v:.1f} %"
    if kpi.endswith("_seconds"):
        return f"{v:.0f} s"
    return f"{v:.2f}" if kpi == "csat_mean" else f"{v:.0f}"


def _rule_kpi(rule: ThresholdRule) -> str:
    return rule.kpi if rule.threshold_s is None else f"{rule.kpi} ({rule.threshold_s} s)"


def _staffing_reason(rule: StaffingRule, gap: StaffingGap, where: str, shown: WarningLevel | None) -> str:
    basis = []
    if gap.forecast is not None:
        basis.append(f"{gap.forecast.volume:.0f} contacts forecast")
    basis.append(f"{gap.actual_volume:.0f} at the current rate")
    sl = "n/a" if gap.expected_service_level is None else f"{gap.expected_service_level:.0%}"
    reason = (
        f"{where}: {gap.staffed:.1f} agents staffed (ready, busy, after-call work) where {gap.required} are "
        f"needed for {rule.target:.0%} in {rule.threshold_s} s ({' / '.join(basis)} per "
        f"{rule.interval_s // 60} min, AHT {gap.aht_s:.0f} s): "
    )
    if shown:
        reason += f"{gap.gap:.1f} agents short ({gap.shortfall:.0%}); with this staff expect {sl} in "
        reason += f"{rule.threshold_s} s"
    else:
        reason += "staffed for the traffic"
    return reason


def _win_end(key: str) -> int:
    return int(key.split("|", 1)[1]) if key.startswith("ew-win|") else 0


class EarlyWarningDetector:
    def __init__(self, rules: RuleSet, base_s: int, thresholds: tuple[int, ...], variant: str) -> None:
        self.rules = rules
        self.base_s = base_s
        self.thresholds = thresholds
        self.variant = variant
        lookbacks = [r.lookback_s for r in [*rules.threshold, *rules.seasonal]]
        for sr in rules.staffing:
            lookbacks += [sr.interval_s, sr.staffed_lookback_s, sr.load_lookback_s, sr.aht_lookback_s]
        self.keep_s = max(lookbacks or [base_s])
        # every dimension but agents: the live KPI gauges read the same rolling windows
        self.dimensions = {"all", "queue", "channel", "business_type"}
        self.rolling: dict[Key, Rolling] = {}
        self.baselines: dict[tuple[str, str, str], SeasonalBaseline] = {}
        self.tracker = WarningTracker()
        self._dirty: set[str] = set()
        self.notes: dict[tuple[str, str, str], str] = {}  # why a rule did not evaluate (cold start, volume)
        self.gaps: dict[tuple[str, str, str], StaffingGap] = {}  # latest per (rule, dimension, value)
        self.plans: dict[tuple[str, str, str], Forecast | None] = {}  # forecast of the running interval
        self.accuracy: dict[tuple[str, str, str], ForecastAccuracy] = {}
        # the last interval recorded per staffing key: a replay after a crash records it once
        self.staffed_upto: dict[tuple[str, str, str], float] = {}
        self._staffing_out: list[StaffingRecord] = []
        # the rolling windows by end time, as persisted: one entry per base window (written once,
        # deleted when no lookback needs it), not the whole lookback per dimension every batch
        self._by_end: dict[int, dict[str, WindowCounts]] = {}
        self._retired: set[str] = set()  # entries of earlier versions' layout, to delete

    @classmethod
    def from_settings(cls, s: Any, rules: RuleSet | None = None) -> EarlyWarningDetector:
        """The detector the worker runs: base window, thresholds and service-level variant of the
        settings, and their rules file (``CALLPULSE_WARNING_RULES``) unless ``rules`` is given."""
        if rules is None:
            rules = load_rules(s.warning_rules)
        return cls(rules, s.base_window_s, tuple(s.sl_thresholds_s), s.sl_default_variant)

    # -- feeding --------------------------------------------------------------------------------
    def observe(self, records: Iterable[KpiRecord]) -> list[WarningRecord]:
        relevant = [r for r in records if r.window_size_s == self.base_s and r.dimension in self.dimensions]
        relevant.sort(key=lambda r: (r.window_start, r.dimension, r.dimension_value))
        out: list[WarningRecord] = []
        for _, window in groupby(relevant, key=lambda r: r.window_start):
            fresh: list[tuple[Key, float]] = []
            t = 0.0
            for r in window:
                key = (r.dimension, r.dimension_value)
                t = epoch_s(r.window_end)
                rolling = self.rolling.setdefault(key, Rolling(self.keep_s))
                if rolling.windows and t <= rolling.windows[-1].end:
                    continue  # seen before (a replay after a crash): observing twice would double-count
                counts = WindowCounts.of(r, self.thresholds)
                rolling.add(counts)
                self._by_end.setdefault(int(t), {})[f"{r.dimension}\t{r.dimension_value}"] = counts
                self._dirty.add(f"ew-win|{int(t)}")
                fresh.append((key, t))
                views: dict[int, LookbackKpis] = {}  # per lookback: rules sharing one share its sums
                for rule in self.rules.threshold:
                    if r.dimension in rule.dimensions:
                        out.extend(self._threshold(rule, key, rolling, t, views))
                for srule in self.rules.seasonal:
                    if r.dimension in srule.dimensions:
                        out.extend(self._seasonal(srule, key, rolling, r, t))
            # staffing last: it reads the window's seasonal baseline, as the worker's batches do
            for k, tk in fresh:
                for frule in self.rules.staffing:
                    if k[0] in frule.dimensions:
                        out.extend(self._staffing(frule, k, tk))
            if fresh and (self.tracker.upto is None or t > self.tracker.upto):
                self.tracker.upto = t  # every lifecycle has been stepped through this window
        if relevant:
            self._dirty.add("ew-tracker")  # open warnings and streak counters
        return out

    def _threshold(
        self, rule: ThresholdRule, key: Key, rolling: Rolling, t: float, views: dict[int, LookbackKpis]
    ) -> list[WarningRecord]:
        k = views.get(rule.lookback_s)
        if k is None:
            k = views[rule.lookback_s] = LookbackKpis(rolling.over(rule.lookback_s, t), self.thresholds, self.variant)
        value, volume = k.value(rule.kpi, rule.threshold_s), k.volume(rule.kpi)
        # reasons are functions, called only when the evaluation changes a warning (rarely):
        # formatting every evaluation's text was a tenth of the detector's time
        if value is None or volume < rule.min_volume:
            self.notes[(rule.name, *key)] = f"not evaluated: {volume:.0f} contacts < guard {rule.min_volume}"

            def reason() -> str:
                return f"{_rule_kpi(rule)} back to normal (volume {volume:.0f})"

            ev = Evaluation(None, None, value, reason=reason)
        else:
            self.notes.pop((rule.name, *key), None)
            above = rule.direction == "above"
            enter, hold = band_levels(value, rule.levels, above)
            shown = enter or hold
            band = rule.levels[shown] if shown else None

            def reason() -> str:
                name, minutes = _rule_kpi(rule), rule.lookback_s / 60
                where = "all" if key[0] == "all" else f"{key[0]} {key[1]}"
                if shown and band:
                    return (
                        f"{where}: {name} {_fmt(rule.kpi, value)} over the last {minutes:.0f} min, "
                        f"{'above' if above else 'below'} the {shown.value} threshold {_fmt(rule.kpi, band.enter)} "
                        f"({volume:.0f} contacts)"
                    )
                return f"{where}: {name} {_fmt(rule.kpi, value)} over the last {minutes:.0f} min, back to normal"

            ev = Evaluation(enter, hold, value, threshold=band.enter if band else None, reason=reason)
        rec = self.tracker.step(rule.name, rule.kpi, key[0], key[1], ev, t, rule.for_windows, rule.clear_windows)
        return [rec] if rec else []

    def _seasonal(self, rule: SeasonalRule, key: Key, rolling: Rolling, r: KpiRecord, t: float) -> list[WarningRecord]:
        bkey = (rule.name, *key)
        base = self.baselines.get(bkey)
        if base is None:
            base = self.baselines[bkey] = self._baseline(rule)
        self._dirty.add(f"ew-base|{rule.name}|{key[0]}|{key[1]}")
        start = t - rule.lookback_s
        windows = rolling.over(rule.lookback_s, t)
        observed = float(sum(w.offered for w in windows))
        out: list[WarningRecord] = []
        where = "all" if key[0] == "all" else f"{key[0]} {key[1]}"
        if len(windows) * self.base_s < rule.lookback_s or not base.trusted(start, t):
            self.notes[bkey] = "cold start: not enough history for this hour of the week yet"
            evs = {
                kind: Evaluation(None, None, observed, reason=f"{where}: cold start, volume not judged")
                for kind in ("surge", "drop")
            }
        else:
            self.notes.pop(bkey, None)
            expected, variance = base.expected(start, t)
            ratio, z = deviation(observed, expected, variance)
            evs = {}
            for kind, levels, worse in (
                ("surge", rule.surge, lambda a, b: a >= b),
                ("drop", rule.drop, lambda a, b: a <= b),
            ):
                enter = hold = None
                if expected >= rule.min_expected:
                    for lv in LEVELS:
                        d = levels.get(lv)
                        if d is None:
                            continue
                        if worse(ratio, d.ratio) and worse(z, d.z):
                            enter = lv
                        if worse(ratio, d.exit_ratio):
                            hold = lv
                shown = enter or hold
                if kind == "surge" and shown:
                    reason = f"{where}: {observed:.0f} contacts in {rule.lookback_s / 60:.0f} min, {ratio:.1f}x the "
                    reason += f"{expected:.0f} expected for this hour of the week (z {z:.1f}); {EMERGENCY_PLAN[shown]}"
                elif kind == "drop" and shown:
                    reason = f"{where}: only {observed:.0f} contacts in {rule.lookback_s / 60:.0f} min where "
                    reason += f"{expected:.0f} are expected (z {z:.1f}): check lines, IVR and routing"
                else:
                    reason = f"{where}: volume {observed:.0f} vs {expected:.0f} expected, back to normal"
                evs[kind] = Evaluation(enter, hold, observed, expected=expected, reason=reason)
        for kind, ev in evs.items():
            name = f"{rule.name}_{kind}"
            rec = self.tracker.step(name, "offered", key[0], key[1], ev, t, rule.for_windows, rule.clear_windows)
            if rec:
                out.append(rec)
        base.observe(epoch_s(r.window_start), float(r.offered))
        if base.profile_changed:
            self._dirty.add(f"ew-prof|{rule.name}|{key[0]}|{key[1]}")
            base.profile_changed = False
        return out

    def _staffing(self, rule: StaffingRule, key: Key, t: float) -> list[WarningRecord]:
        skey = (rule.name, *key)
        base = self.baselines.get((rule.forecast_rule, *key)) if rule.forecast_rule else None
        windows = list(self.rolling[key].windows)  # t is the newest: staffing runs at its window's end
        fc = forecast(base, t, t + rule.interval_s) if base else None  # the next interval
        closed = t % rule.interval_s == 0 and t > self.staffed_upto.get(skey, float("-inf"))
        if closed:  # a planning interval closed (not before a crash): record it, plan the next one
            self.staffed_upto[skey] = t
            start = t - rule.interval_s
            plan = self.plans.get(skey)
            plan = plan if plan is not None and plan.start == start else None
            acc = self.accuracy.setdefault(skey, ForecastAccuracy())
            mine = ending_after(windows, start)
            if plan is not None:
                acc.add(plan.volume, sum(w.offered for w in mine))
            self._staffing_out.append(
                interval_record(rule, key, mine, self.base_s, start, plan, self.thresholds, self.variant, acc.wape())
            )
            self.plans[skey] = fc
            self._dirty.add(f"ew-staff|{rule.name}|{key[0]}|{key[1]}")
        gap = self.gaps[skey] = evaluate_gap(rule, windows, self.base_s, t, fc)
        where = "all" if key[0] == "all" else f"{key[0]} {key[1]}"
        required = gap.required
        if required is None or required < rule.min_required:
            self.notes[skey] = (
                "not evaluated: less data than the lookbacks yet"
                if required is None
                else f"not evaluated: {required} agents required < guard {rule.min_required}"
            )
            ev = Evaluation(None, None, gap.shortfall, expected=required, reason=f"{where}: staffing not judged")
        else:
            self.notes.pop(skey, None)
            enter, hold = band_levels(gap.shortfall, rule.levels, above=True)
            shown = enter or hold
            band = rule.levels[shown] if shown else None
            ev = Evaluation(
                enter,
                hold,
                gap.shortfall,
                threshold=band.enter if band else None,
                expected=required,
                reason=lambda: _staffing_reason(rule, gap, where, shown),  # only if it changes a warning
            )
        rec = self.tracker.step(
            rule.name, "staffing_shortfall", key[0], key[1], ev, t, rule.for_windows, rule.clear_windows
        )
        return [rec] if rec else []

    def drain_staffing(self) -> list[StaffingRecord]:
        """Planning intervals closed since the last call."""
        out, self._staffing_out = self._staffing_out, []
        return out

    def _baseline(self, rule: SeasonalRule) -> SeasonalBaseline:
        return SeasonalBaseline(rule.slot_s, self.base_s, rule.weeks, rule.min_weeks, rule.level_half_life_s)

    # -- reading (metrics) ---------------------------------------------------------------------
    def lookback(self, keys: list[Key], lookback_s: int) -> LookbackKpis:
        """KPIs over the last ``lookback_s`` of one or more dimension values (several = their
        union, as for a capped label's ``other`` bucket)."""
        windows: list[WindowCounts] = []
        for key in keys:
            roll = self.rolling.get(key)
            if roll and roll.windows:
                windows.extend(roll.over(lookback_s, roll.windows[-1].end))
        return LookbackKpis(windows, self.thresholds, self.variant)

    def expected_volume(self, key: Key) -> tuple[float, float | None] | None:
        """(observed, expected) contacts over the first seasonal rule's lookback; expected is
        None until the profile is trusted (cold start)."""
        for rule in self.rules.seasonal:
            base = self.baselines.get((rule.name, *key))
            roll = self.rolling.get(key)
            if base is None or not roll or not roll.windows:
                continue
            t = roll.windows[-1].end
            observed = float(sum(w.offered for w in roll.over(rule.lookback_s, t)))
            trusted = base.trusted(t - rule.lookback_s, t)
            return observed, base.expected(t - rule.lookback_s, t)[0] if trusted else None
        return None

    # -- state ----------------------------------------------------------------------------------
    def drain_state(self) -> dict[str, Any]:
        """Entries changed since the last drain (key -> JSON value; None deletes), in the order
        they must be written: a crash lets a prefix of them through (one changelog partition),
        and the restarted worker observes the same windows again. Each part skips what its own
        entry already holds (``staffed_upto``, the tracker's ``upto``, a baseline's ``upto`` and
        ``committed``, the rolling windows' ends), so a part replayed must read its inputs as
        they were: the staffing plans and the warning lifecycles come before the seasonal
        baselines they read, each baseline's profile before its open slot, the rolling windows
        after every part, and the deletions last (an evaluation replayed reads the whole lookback)."""
        out: dict[str, Any] = {}
        order = ("ew-staff", "ew-tracker", "ew-prof", "ew-base", "ew-win")
        for k in sorted(self._dirty, key=lambda k: (order.index(k.split("|", 1)[0]), k)):
            kind, *rest = k.split("|")
            if kind == "ew-win":
                out[k] = {dk: w.dump() for dk, w in self._by_end[int(rest[0])].items()}
            elif kind == "ew-base":
                out[k] = self.baselines[(rest[0], rest[1], rest[2])].dump_recent()
            elif kind == "ew-prof":
                out[k] = self.baselines[(rest[0], rest[1], rest[2])].dump_profile()
            elif kind == "ew-staff":
                skey = (rest[0], rest[1], rest[2])
                plan = self.plans.get(skey)
                acc = self.accuracy.get(skey) or ForecastAccuracy()
                out[k] = {
                    "plan": None if plan is None else list(astuple(plan)),
                    "accuracy": acc.dump(),
                    "upto": self.staffed_upto.get(skey),
                }
            else:
                out[k] = self.tracker.dump()
        self._dirty.clear()
        out.update(dict.fromkeys(self._retired))
        self._retired.clear()
        if self._by_end:
            newest = max(self._by_end)
            for end in [e for e in self._by_end if e <= newest - self.keep_s]:
                del self._by_end[end]
                out[f"ew-win|{end}"] = None
        return out

    def load_state(self, entries: Iterable[tuple[str, Any]]) -> None:
        entries = sorted(entries, key=lambda kv: (kv[0].startswith("ew-win|"), _win_end(kv[0])))
        baselines: dict[tuple[str, str, str], list[Any]] = {}  # -> [profile, open slot]: loaded together
        for k, v in entries:
            if v is None:
                continue  # a deletion
            kind, *rest = k.split("|")
            if kind == "ew-win":
                end = int(rest[0])
                cell = self._by_end[end] = {}
                for dk, values in v.items():
                    dimension, _, value = dk.partition("\t")
                    counts = cell[dk] = WindowCounts.load(values)
                    roll = self.rolling.setdefault((dimension, value), Rolling(self.keep_s))
                    if not roll.windows or roll.windows[-1].end < counts.end:
                        roll.add(counts)
            elif kind == "ew-roll":  # one dimension's whole lookback: state written by earlier versions
                self._retired.add(k)  # rewritten as per-window entries, then deleted
                roll = self.rolling.setdefault((rest[0], rest[1]), Rolling(self.keep_s))
                roll.windows.clear()
                for w in v:
                    counts = WindowCounts.load(w)
                    roll.windows.append(counts)
                    self._by_end.setdefault(int(counts.end), {})[f"{rest[0]}\t{rest[1]}"] = counts
                    self._dirty.add(f"ew-win|{int(counts.end)}")
            elif kind in ("ew-base", "ew-prof"):
                parts = baselines.setdefault((rest[0], rest[1], rest[2]), [None, None])
                parts[kind == "ew-base"] = v
            elif kind == "ew-staff":
                skey = (rest[0], rest[1], rest[2])
                self.plans[skey] = None if v["plan"] is None else Forecast(*v["plan"])
                self.accuracy[skey] = ForecastAccuracy.load(v["accuracy"])
                if v.get("upto") is not None:
                    self.staffed_upto[skey] = v["upto"]
            elif kind == "ew-tracker":
                self.tracker.load(v)
        for bkey, (profile, recent) in baselines.items():
            rule = next((r for r in self.rules.seasonal if r.name == bkey[0]), None)
            if rule is not None:  # else a rule that was removed from the configuration
                self.baselines[bkey] = b = self._baseline(rule)
                b.load(profile, recent)

    @staticmethod
    def owns(key: str) -> bool:
        """Whether a state-table key is the detector's (they share the merge stage's table)."""
        return key.startswith("ew-")
