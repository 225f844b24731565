"""KPI gauges for Grafana and Alertmanager, on the worker's registry.

Three kinds, all labelled ``dimension`` (all, queue, channel, business_type) and ``value`` (the
queue, channel or business type; empty for ``all``):

* rolling KPIs over the last 15 minutes of final base windows (surveys: the last hour),
  refreshed whenever windows close: service level per threshold, answer and abandon rate, ASA,
  AHT, longest wait, occupancy, offered and expected contacts, ticket backlog and SLA breach
  rate, CSAT and NPS. Exported by the worker that owns the merge stage (one at a time);
* live values refreshed every second from the worker's own partitions: contacts waiting and in
  progress, longest current wait, agents per state. Each worker exports its share: sum them in
  PromQL (``max`` for the longest wait);
* ``callpulse_warning_active``: 1 per open warning at its level (the series Alertmanager pages on);
* the staffing gap of the first staffing rule (``docs/staffing.md``): agents staffed, required
  on the forecast and on the actual rate, the gap, the service level expected with today's staff,
  the next interval's forecast and its rolling WAPE.

Label cardinality is bounded: never an agent or customer label, and at most
``max_values`` values per dimension; the rest share the value ``other`` (ratios over their union).
Names follow Prometheus conventions (base units, ``_ratio`` for 0..1, no ``total`` in gauges).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Gauge

from schemas.records import WarningLevel
from streams.early_warning.detector import EarlyWarningDetector, Key

DIMENSIONS = ("all", "queue", "channel", "business_type")
LEVEL_RANK = {WarningLevel.yellow: 1, WarningLevel.orange: 2, WarningLevel.red: 3}

# (metric name, help, KPI in LookbackKpis, lookback)
ROLLING: tuple[tuple[str, str, str, int], ...] = (
    ("callpulse_answer_rate_ratio", "Answered / offered, last 15 min", "answer_rate", 900),
    ("callpulse_abandon_rate_ratio", "Abandoned / offered, last 15 min", "abandon_rate", 900),
    ("callpulse_asa_seconds", "Average speed of answer, last 15 min", "asa_seconds", 900),
    ("callpulse_aht_seconds", "Average handle time (talk + hold + ACW), last 15 min", "aht_seconds", 900),
    (
        "callpulse_window_longest_wait_seconds",
        "Longest wait of a contact that left the queue, last 15 min",
        "longest_wait_seconds",
        900,
    ),
    ("callpulse_occupancy_ratio", "Agent occupancy (busy + ACW) / (ready + busy + ACW), last 15 min", "occupancy", 900),
    ("callpulse_contacts_offered", "Contacts offered in the last 15 min", "offered", 900),
    ("callpulse_ticket_backlog", "Open tickets at the end of the last closed window", "backlog", 900),
    (
        "callpulse_ticket_sla_breach_ratio",
        "Tickets breaching their SLA / evaluated, last hour",
        "sla_breach_rate",
        3600,
    ),
    ("callpulse_csat_score", "Mean CSAT (1-5), last hour", "csat_mean", 3600),
    ("callpulse_nps_score", "Net promoter score (-100..100), last hour", "nps", 3600),
)
LIVE: tuple[tuple[str, str, str], ...] = (
    ("callpulse_contacts_waiting", "Contacts waiting in queue now (this worker's partitions)", "waiting"),
    (
        "callpulse_contacts_in_progress",
        "Contacts in queue or being handled now (this worker's partitions)",
        "in_progress",
    ),
    ("callpulse_longest_current_wait_seconds", "Longest wait of a contact still in queue now", "longest_wait_s"),
)
AGENT_STATES = ("ready", "busy", "after_call_work", "not_ready", "logged_in", "staffed")


class KpiGauges:
    def __init__(self, registry: CollectorRegistry, thresholds: Iterable[int], max_values: int = 50) -> None:
        labels = ["dimension", "value"]
        self.thresholds = tuple(thresholds)
        self.max_values = max_values
        self.known: dict[str, list[str]] = {d: [] for d in DIMENSIONS}
        self.service_level = Gauge(
            "callpulse_service_level_ratio",
            "Service level (configured variant) per answer-time threshold, last 15 min",
            [*labels, "threshold_seconds"],
            registry=registry,
        )
        self.rolling = {
            kpi: (Gauge(name, doc, labels, registry=registry), lookback) for name, doc, kpi, lookback in ROLLING
        }
        self.expected = Gauge(
            "callpulse_contacts_expected",
            "Contacts expected over the seasonal lookback for this hour of the week (NaN until learned)",
            labels,
            registry=registry,
        )
        self.observed = Gauge(
            "callpulse_contacts_observed", "Contacts observed over the seasonal lookback", labels, registry=registry
        )
        self.live = {key: Gauge(name, doc, labels, registry=registry) for name, doc, key in LIVE}
        self.agents = Gauge(
            "callpulse_agents", "Agents per state now (this worker's partitions)", [*labels, "state"], registry=registry
        )
        self.warning = Gauge(
            "callpulse_warning_active",
            "1 while a warning is open at this level (rule, KPI, dimension value); 0 series = none",
            ["rule", "dimension", "value", "level"],
            registry=registry,
        )
        self.warning_level = Gauge(
            "callpulse_warning_level",
            "Highest open warning level per dimension value: 0 none, 1 yellow, 2 orange, 3 red",
            labels,
            registry=registry,
        )
        self.staffing = {
            name: Gauge(f"callpulse_staffing_{name}", doc, labels, registry=registry)
            for name, doc in (
                ("staffed_agents", "Agents ready, busy or in after-call work (last minute)"),
                ("gap_agents", "Agents required for the service-level target minus agents staffed; > 0 = short"),
                (
                    "expected_service_level_ratio",
                    "Service level Erlang C expects with the agents staffed now (larger of forecast and actual load)",
                ),
            )
        }
        self.required = Gauge(
            "callpulse_staffing_required_agents",
            "Agents required (Erlang C) for the target on the next interval's forecast or the current rate",
            [*labels, "basis"],
            registry=registry,
        )
        self.forecast = Gauge(
            "callpulse_forecast_contacts",
            "Contacts forecast for the next planning interval, with the 80 % prediction interval",
            [*labels, "bound"],
            registry=registry,
        )
        self.forecast_wape = Gauge(
            "callpulse_forecast_wape_ratio",
            "Forecast error of the last day's intervals: sum |actual - forecast| / sum actual",
            labels,
            registry=registry,
        )
        self._warning_series: set[tuple[str, ...]] = set()
        self._live_contacts: set[tuple[str, str]] = set()
        self._live_agents: set[tuple[str, str]] = set()
        self._known_keys: set[tuple[str, str]] = set()
        self._level_series: set[tuple[str, str]] = set()

    # -- labels ---------------------------------------------------------------------------------
    def label(self, dimension: str, value: str) -> str:
        """The exported value label: itself while under the cap, else ``other``."""
        if dimension == "all":
            return "all"  # Prometheus drops empty labels; "all" keeps the label set uniform
        known = self.known.setdefault(dimension, [])
        if value in known:
            return value
        if len(known) < self.max_values:
            known.append(value)
            return value
        return "other"

    def _groups(self, keys: Iterable[Key]) -> dict[tuple[str, str], list[Key]]:
        groups: dict[tuple[str, str], list[Key]] = {}
        for dim, value in sorted(keys):
            if dim in DIMENSIONS:
                groups.setdefault((dim, self.label(dim, value)), []).append((dim, value))
        return groups

    # -- updates --------------------------------------------------------------------------------
    def update_rolling(self, detector: EarlyWarningDetector) -> None:
        groups = self._groups(detector.rolling)
        self._known_keys = set(groups)
        for (dim, label), keys in groups.items():
            k = detector.lookback(keys, 900)
            for t in self.thresholds:
                v = k.value("service_level", t) if k.volume("service_level") > 0 else None
                self._set(self.service_level.labels(dim, label, str(t)), v)
            by_lookback = {lb: detector.lookback(keys, lb) for lb in {lb for _, lb in self.rolling.values()}}
            for kpi, (gauge, lookback) in self.rolling.items():
                k = by_lookback[lookback]
                v = k.value(kpi)
                if kpi not in ("offered", "backlog") and k.volume(kpi) == 0:
                    v = None
                self._set(gauge.labels(dim, label), v)
            seasonal = detector.expected_volume(keys[0]) if len(keys) == 1 else None
            if seasonal is not None:  # expected is NaN during the cold start (not learned yet)
                self.observed.labels(dim, label).set(seasonal[0])
                self._set(self.expected.labels(dim, label), seasonal[1])

    def update_live(self, live: dict[str, dict[str, float]]) -> None:
        merged: dict[tuple[str, str], dict[str, float]] = {}
        for key, values in live.items():
            dim, _, value = key.partition("\t")
            if dim not in DIMENSIONS:
                continue
            cell = merged.setdefault((dim, self.label(dim, value)), {})
            for name, v in values.items():
                cell[name] = max(cell.get(name, 0), v) if name == "longest_wait_s" else cell.get(name, 0) + v
        # a value with nothing open any more goes to 0 (not stale at its last count)
        known = self._known_keys  # every value with closed windows exports 0 rather than nothing
        contact_keys = {k for k, v in merged.items() if "waiting" in v} | self._live_contacts | known
        agent_keys = {k for k, v in merged.items() if "agents_staffed" in v} | self._live_agents
        agent_keys |= {k for k in known if k[0] in ("all", "queue")}
        for key in contact_keys:
            values = merged.get(key, {})
            for name, gauge in self.live.items():
                gauge.labels(*key).set(values.get(name, 0))
        for key in agent_keys:
            values = merged.get(key, {})
            for state in AGENT_STATES:
                self.agents.labels(*key, state).set(values.get(f"agents_{state}", 0))
        self._live_contacts, self._live_agents = contact_keys, agent_keys

    def update_warnings(self, open_warnings: dict[tuple[str, str, str], WarningLevel]) -> None:
        series = set()
        worst: dict[tuple[str, str], int] = {}
        for (rule, dim, value), level in open_warnings.items():
            label = self.label(dim, value)
            s = (rule, dim, label, level.value)
            series.add(s)
            self.warning.labels(*s).set(1)
            worst[(dim, label)] = max(worst.get((dim, label), 0), LEVEL_RANK[level])
        for s in self._warning_series - series:
            self.warning.remove(*s)
        self._warning_series = series
        for key in self._level_series | set(worst):
            self.warning_level.labels(*key).set(worst.get(key, 0))
        self._level_series |= set(worst)

    def update_staffing(self, detector: EarlyWarningDetector) -> None:
        """The first staffing rule's latest gap per dimension value (values past the label cap
        are left out: required agents of several queues do not add up)."""
        rule = detector.rules.staffing[0].name if detector.rules.staffing else None
        for (name, dim, value), gap in detector.gaps.items():
            label = self.label(dim, value)
            if name != rule or label == "other":
                continue
            self._set(self.staffing["staffed_agents"].labels(dim, label), gap.staffed)
            self._set(self.staffing["gap_agents"].labels(dim, label), gap.gap)
            self._set(self.staffing["expected_service_level_ratio"].labels(dim, label), gap.expected_service_level)
            for basis, req in (("forecast", gap.required_forecast), ("actual", gap.required_actual)):
                self._set(self.required.labels(dim, label, basis), req)
            fc = gap.forecast
            for bound, v in (("expected", fc and fc.volume), ("low", fc and fc.low), ("high", fc and fc.high)):
                self._set(self.forecast.labels(dim, label, bound), v)
            acc = detector.accuracy.get((name, dim, value))
            self._set(self.forecast_wape.labels(dim, label), acc.wape() if acc else None)

    def clear_merge_owned(self) -> None:
        """Forget the rolling KPIs and warnings: another worker now owns the merge stage."""
        for gauge in (
            self.service_level,
            self.expected,
            self.observed,
            self.warning,
            self.warning_level,
            self.required,
            self.forecast,
            self.forecast_wape,
            *self.staffing.values(),
        ):
            gauge.clear()
        for gauge, _ in self.rolling.values():
            gauge.clear()
        self._warning_series = set()
        self._level_series = set()
        self._known_keys = set()

    @staticmethod
    def _set(gauge: Gauge, value: float | None) -> None:
        gauge.set(float("nan") if value is None else value)
