"""Grafana dashboards for callpulse, generated as JSON (``python deploy/grafana/dashboards.py``
writes ``deploy/grafana/dashboards/*.json``; a test checks the files are up to date and runs
every query against a real Prometheus / ClickHouse).

* ``callpulse-realtime``: per-queue tiles, service level / abandon rate / ASA over time, waiting
  contacts, agents, offered vs expected volume, active warnings (Prometheus).
* ``callpulse-history``: service level by hour of week, daily trends, CSAT by wait bucket,
  ticket aging, warning history (ClickHouse, the official grafana-clickhouse-datasource plugin).
* ``callpulse-pipeline``: event rates and outcomes, dead letters, consumer lag, latencies, the
  ClickHouse sink (Prometheus).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards"
PROM = {"type": "prometheus", "uid": "prometheus"}
CH = {"type": "grafana-clickhouse-datasource", "uid": "clickhouse"}


class Layout:
    """Panels placed left to right on a 24-column grid."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0
        self.panels: list[dict[str, Any]] = []

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self.x, self.y = 0, self.y + self.row_h
            self.row_h = 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def prom(expr: str, legend: str = "", instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": PROM, "expr": expr, "legendFormat": legend}
    if instant:
        t.update({"instant": True, "range": False, "format": "table"})
    return t


def sql(query: str, table: bool = True) -> dict[str, Any]:
    return {
        "datasource": CH,
        "editorType": "sql",
        "rawSql": query.strip(),
        "format": 1 if table else 0,
        "queryType": "table" if table else "timeseries",
    }


def panel(kind: str, title: str, targets: list[dict[str, Any]], unit: str = "", **extra: Any) -> dict[str, Any]:
    for ref, t in zip("ABCDEFGH", targets, strict=False):
        t["refId"] = ref
    p: dict[str, Any] = {
        "type": kind,
        "title": title,
        "datasource": targets[0]["datasource"],
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit} if unit else {}, "overrides": []},
        "options": {},
    }
    p.update(extra)
    return p


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def dashboard(
    uid: str, title: str, layout: Layout, variables: list[dict[str, Any]] | None = None, **kw: Any
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["callpulse"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": kw.get("refresh", "10s"),
        "time": {"from": kw.get("time_from", "now-6h"), "to": "now"},
        "templating": {"list": variables or []},
        "panels": layout.panels,
    }


QUEUE_VAR = {
    "name": "queue",
    "label": "Queue",
    "type": "query",
    "datasource": PROM,
    "query": {"query": 'label_values(callpulse_service_level_ratio{dimension="queue"}, value)', "refId": "queue"},
    "definition": 'label_values(callpulse_service_level_ratio{dimension="queue"}, value)',
    "refresh": 2,
    "multi": True,
    "includeAll": True,
    "current": {"text": "All", "value": "$__all"},
}
Q = 'dimension="queue", value=~"$queue"'


def realtime() -> dict[str, Any]:
    lay = Layout()
    sl_colors = thresholds(("red", None), ("orange", 0.6), ("yellow", 0.75), ("green", 0.85))
    tiles = [
        (
            "Service level 30 s",
            f'callpulse:service_level_ratio:by_value{{{Q}, threshold_seconds="30"}}',
            "percentunit",
            sl_colors,
        ),
        (
            "Abandon rate",
            f"max by (value) (callpulse_abandon_rate_ratio{{{Q}}})",
            "percentunit",
            thresholds(("green", None), ("yellow", 0.08), ("orange", 0.15), ("red", 0.25)),
        ),
        (
            "ASA",
            f"max by (value) (callpulse_asa_seconds{{{Q}}})",
            "s",
            thresholds(("green", None), ("yellow", 60), ("orange", 120), ("red", 240)),
        ),
        ("Waiting now", f"callpulse:contacts_waiting:sum{{{Q}}}", "none", thresholds(("green", None), ("orange", 10))),
        (
            "Longest current wait",
            f"callpulse:longest_current_wait_seconds:max{{{Q}}}",
            "s",
            thresholds(("green", None), ("yellow", 180), ("red", 600)),
        ),
        (
            "Warning level",
            f"callpulse:warning_level:max{{{Q}}}",
            "none",
            thresholds(("green", None), ("yellow", 1), ("orange", 2), ("red", 3)),
        ),
    ]
    for title, expr, unit, steps in tiles:
        p = panel("stat", f"{title} by queue", [prom(expr, "{{value}}")], unit)
        p["fieldConfig"]["defaults"]["thresholds"] = steps
        p["options"] = {"colorMode": "background", "graphMode": "none", "textMode": "value_and_name"}
        lay.add(p, 4, 5)
    center = [
        ("Center: occupancy", 'max(callpulse_occupancy_ratio{dimension="all"})', "percentunit"),
        ("Center: AHT", 'max(callpulse_aht_seconds{dimension="all"})', "s"),
        ("Center: CSAT (1 h)", 'max(callpulse_csat_score{dimension="all"})', "none"),
        ("Center: NPS (1 h)", 'max(callpulse_nps_score{dimension="all"})', "none"),
        ("Ticket backlog", 'max(callpulse_ticket_backlog{dimension="all"})', "none"),
        ("Agents staffed", 'sum(callpulse:agents:sum{dimension="all", state="staffed"})', "none"),
    ]
    for title, expr, unit in center:
        lay.add(panel("stat", title, [prom(expr, "")], unit), 4, 4)
    lay.add(
        panel(
            "timeseries",
            "Service level 30 s (last 15 min)",
            [
                prom(f'callpulse:service_level_ratio:by_value{{{Q}, threshold_seconds="30"}}', "{{value}}"),
                prom('callpulse:service_level_ratio:by_value{dimension="all", threshold_seconds="30"}', "center"),
            ],
            "percentunit",
        ),
        12,
        8,
    )
    lay.add(
        panel(
            "timeseries",
            "Abandon rate (last 15 min)",
            [prom(f"max by (value) (callpulse_abandon_rate_ratio{{{Q}}})", "{{value}}")],
            "percentunit",
        ),
        12,
        8,
    )
    lay.add(
        panel(
            "timeseries",
            "ASA (last 15 min)",
            [prom(f"max by (value) (callpulse_asa_seconds{{{Q}}})", "{{value}}")],
            "s",
        ),
        12,
        8,
    )
    lay.add(
        panel(
            "timeseries", "Contacts waiting now", [prom(f"callpulse:contacts_waiting:sum{{{Q}}}", "{{value}}")], "none"
        ),
        12,
        8,
    )
    lay.add(
        panel(
            "timeseries",
            "Offered vs expected for this hour of the week",
            [
                prom(f"max by (value) (callpulse_contacts_observed{{{Q}}})", "{{value}} observed"),
                prom(f"max by (value) (callpulse_contacts_expected{{{Q}}})", "{{value}} expected"),
            ],
            "none",
        ),
        12,
        8,
    )
    lay.add(
        panel(
            "timeseries",
            "Agents by state",
            [prom('callpulse:agents:sum{dimension="all", state!="staffed"}', "{{state}}")],
            "none",
            options={"stacking": {"mode": "normal"}},
        ),
        12,
        8,
    )
    gap = panel(
        "stat",
        "Staffing gap by queue (agents short for 80 % in 20 s)",
        [prom(f"max by (value) (callpulse_staffing_gap_agents{{{Q}}})", "{{value}}")],
        "none",
    )
    gap["fieldConfig"]["defaults"]["thresholds"] = thresholds(("green", None), ("yellow", 0.5), ("red", 3))
    gap["options"] = {"colorMode": "background", "graphMode": "area", "textMode": "value_and_name"}
    lay.add(gap, 12, 8)
    lay.add(
        panel(
            "timeseries",
            "Staffing: required vs staffed",
            [
                prom(
                    f'max by (value) (callpulse_staffing_required_agents{{{Q}, basis="forecast"}})',
                    "{{value}} on forecast",
                ),
                prom(
                    f'max by (value) (callpulse_staffing_required_agents{{{Q}, basis="actual"}})', "{{value}} on actual"
                ),
                prom(f"max by (value) (callpulse_staffing_staffed_agents{{{Q}}})", "{{value}} staffed"),
            ],
            "none",
        ),
        12,
        8,
    )
    lay.add(
        panel(
            "timeseries",
            "Service level to expect with today's staff (Erlang C, 20 s)",
            [prom(f"max by (value) (callpulse_staffing_expected_service_level_ratio{{{Q}}})", "{{value}}")],
            "percentunit",
        ),
        12,
        8,
    )
    lay.add(
        panel(
            "timeseries",
            "Forecast for the next 15 min (80 % interval) and its error (WAPE, last day)",
            [
                prom(f"max by (value, bound) (callpulse_forecast_contacts{{{Q}}})", "{{value}} {{bound}}"),
                prom(f"max by (value) (callpulse_forecast_wape_ratio{{{Q}}})", "{{value}} WAPE"),
            ],
            "none",
        ),
        12,
        8,
    )
    lay.add(
        panel(
            "table",
            "Active warnings",
            [prom("max by (rule, dimension, value, level) (callpulse_warning_active)", "", instant=True)],
            "none",
        ),
        24,
        8,
    )
    return dashboard("callpulse-realtime", "callpulse: real-time operations", lay, [QUEUE_VAR])


# ClickHouse: $__timeFilter(col) is the plugin's macro
WITHIN_30S = "answered_within[indexOf(sl_threshold_s, 30)]"
HOUR_OF_WEEK_SQL = (
    "SELECT\n    toHour(window_start) AS hour,\n"
    + ",\n".join(
        f"    sumIf({WITHIN_30S}, toDayOfWeek(window_start) = {i})\n"
        f"        / sumIf(answered + abandoned - short_abandoned, toDayOfWeek(window_start) = {i}) AS {day}"
        for i, day in enumerate(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"), start=1)
    )
    + "\nFROM callpulse.kpi_window FINAL\n"
    "WHERE window_size_s = 3600 AND dimension = 'all' AND $__timeFilter(window_start)\n"
    "GROUP BY hour\nORDER BY hour"
)
HISTORY_SQL = {
    # a heat map as a table: one row per hour, one column per weekday, cells coloured by value
    "Service level 30 s by hour of week": ("table", HOUR_OF_WEEK_SQL, "percentunit"),
    "Daily offered, answered, abandoned": (
        "barchart",
        """
SELECT toString(day) AS date, offered, answered, abandoned
FROM callpulse.kpi_daily
WHERE dimension = 'all' AND $__timeFilter(toDateTime(day))
ORDER BY day
""",
        "none",
    ),
    "Daily service level and abandon rate by queue": (
        "table",
        """
SELECT day, dimension_value AS queue, offered,
    round(service_level_at[indexOf(sl_threshold_s, 30)], 4) AS sl_30s,
    round(abandon_rate, 4) AS abandon_rate, round(asa_seconds, 1) AS asa_s, round(aht_seconds, 1) AS aht_s
FROM callpulse.kpi_daily
WHERE dimension = 'queue' AND $__timeFilter(toDateTime(day))
ORDER BY day DESC, queue
""",
        "none",
    ),
    "CSAT by wait bucket": (
        "barchart",
        """
SELECT bucket, sum(n) AS responses, sum(mean * n) / sum(n) AS csat_mean
FROM callpulse.kpi_window FINAL
ARRAY JOIN csat_wait_bucket AS bucket, csat_wait_responses AS n, csat_wait_mean AS mean
WHERE window_size_s = 3600 AND dimension = 'all' AND $__timeFilter(window_start)
GROUP BY bucket
ORDER BY bucket
""",
        "none",
    ),
    "Open tickets by age": (
        "barchart",
        """
SELECT age_bucket, category, count() AS tickets
FROM callpulse.ticket_aging
WHERE is_open AND $__timeFilter(created_at)
GROUP BY age_bucket, category
ORDER BY age_bucket, category
""",
        "none",
    ),
    "Ticket SLA breach by category": (
        "table",
        """
SELECT category, count() AS tickets, countIf(sla_breached) AS breached,
    round(countIf(sla_breached) / count(), 4) AS breach_rate
FROM callpulse.ticket_aging
WHERE $__timeFilter(created_at)
GROUP BY category
ORDER BY breach_rate DESC
""",
        "none",
    ),
    "Staffing by interval": (
        "table",
        """
SELECT interval_start, dimension_value AS queue, forecast_contacts, offered, aht_seconds,
    required_agents_forecast, required_agents_actual, round(staffed_agents, 1) AS staffed,
    round(gap_agents, 1) AS gap, round(expected_service_level, 3) AS expected_sl,
    round(service_level, 3) AS measured_sl, round(forecast_wape, 3) AS wape
FROM callpulse.staffing_interval FINAL
WHERE dimension = 'queue' AND $__timeFilter(interval_start)
ORDER BY interval_start DESC, queue
LIMIT 500
""",
        "none",
    ),
    "Forecast error by queue (WAPE)": (
        "table",
        """
SELECT dimension_value AS queue, count() AS intervals,
    countIf(forecast_contacts IS NOT NULL) AS forecast_intervals,
    round(sumIf(abs(offered - forecast_contacts), forecast_contacts IS NOT NULL)
        / sumIf(offered, forecast_contacts IS NOT NULL), 4) AS wape
FROM callpulse.staffing_interval FINAL
WHERE dimension = 'queue' AND $__timeFilter(interval_start)
GROUP BY queue
ORDER BY queue
""",
        "none",
    ),
    "Warning history": (
        "table",
        """
SELECT updated_at, rule, dimension, dimension_value, change, level, reason
FROM callpulse.warnings FINAL
WHERE $__timeFilter(updated_at)
ORDER BY updated_at DESC
LIMIT 200
""",
        "none",
    ),
}


def history() -> dict[str, Any]:
    lay = Layout()
    for title, (kind, query, unit) in HISTORY_SQL.items():
        p = panel(kind, title, [sql(query)], unit)
        if unit == "percentunit":
            p["fieldConfig"]["defaults"]["custom"] = {"cellOptions": {"type": "color-background"}}
            p["fieldConfig"]["defaults"]["thresholds"] = thresholds(
                ("red", None), ("orange", 0.6), ("yellow", 0.75), ("green", 0.85)
            )
        lay.add(p, 12, 9)
    return dashboard("callpulse-history", "callpulse: history (ClickHouse)", lay, refresh="5m", time_from="now-30d")


def pipeline() -> dict[str, Any]:
    lay = Layout()
    rows = [
        (
            "Events per second by outcome",
            "sum by (outcome) (rate(callpulse_events_total[$__rate_interval]))",
            "{{outcome}}",
            "ops",
        ),
        (
            "Dead letters per second by reason",
            "sum by (reason) (rate(callpulse_dead_letters_total[$__rate_interval]))",
            "{{reason}}",
            "ops",
        ),
        ("Consumer lag (records)", "sum by (topic) (callpulse_consumer_lag_records)", "{{topic}}", "none"),
        (
            "Batch duration p95 by stage",
            "histogram_quantile(0.95, sum by (le, stage) "
            "(rate(callpulse_batch_duration_seconds_bucket[$__rate_interval])))",
            "{{stage}}",
            "s",
        ),
        (
            "Worker busy time by stage (share of a core; the merge stage runs in one worker)",
            "sum by (instance, stage) (rate(callpulse_batch_duration_seconds_sum[$__rate_interval]))",
            "{{instance}} {{stage}}",
            "percentunit",
        ),
        (
            "Window publish delay p95 (event time -> metrics)",
            "histogram_quantile(0.95, sum by (le) "
            "(rate(callpulse_window_emit_delay_seconds_bucket[$__rate_interval])))",
            "p95",
            "s",
        ),
        ("Stream time behind wall clock", "time() - min(callpulse_stream_time_seconds)", "behind", "s"),
        (
            "Garbage-collector pauses (seconds per second, by generation)",
            "sum by (generation) (rate(callpulse_gc_pause_seconds_sum[$__rate_interval]))",
            "generation {{generation}}",
            "percentunit",
        ),
        (
            "ClickHouse rows per second by table",
            "sum by (table) (rate(callpulse_sink_rows_total[$__rate_interval]))",
            "{{table}}",
            "ops",
        ),
        (
            "ClickHouse insert p95 by table",
            "histogram_quantile(0.95, sum by (le, table) "
            "(rate(callpulse_sink_insert_duration_seconds_bucket[$__rate_interval])))",
            "{{table}}",
            "s",
        ),
        ("Sink failing (1 = paused, retrying)", "max(callpulse_sink_failing)", "failing", "none"),
        ("Targets up", 'up{job=~"callpulse.*"}', "{{job}} {{instance}}", "none"),
        (
            "Process starts in the last hour (a worker or sink exits when it cannot go on)",
            'changes(process_start_time_seconds{job=~"callpulse.*"}[1h])',
            "{{job}} {{instance}}",
            "none",
        ),
    ]
    for title, expr, legend, unit in rows:
        lay.add(panel("timeseries", title, [prom(expr, legend)], unit), 12, 8)
    return dashboard("callpulse-pipeline", "callpulse: pipeline health", lay, time_from="now-3h")


DASHBOARDS = {"realtime": realtime, "history": history, "pipeline": pipeline}


def render() -> dict[str, str]:
    return {f"{name}.json": json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(OUT / name)
