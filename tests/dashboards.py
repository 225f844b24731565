"""Reading the provisioned Grafana dashboards' queries, with Grafana's variables and the
ClickHouse plugin's macros expanded for a test run."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.services import REPO

DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"


def targets(datasource_type: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(dashboard, panel title, target) for every target of that datasource type."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text())
        for panel in doc["panels"]:
            for t in panel.get("targets", []):
                if t["datasource"]["type"] == datasource_type:
                    out.append((path.stem, panel["title"], t))
    return out


def promql(expr: str) -> str:
    """Grafana's variables as a dashboard opened with defaults would set them."""
    return expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace('"$queue"', '".*"')


def clickhouse_sql(query: str, database: str) -> str:
    """The plugin's ``$__timeFilter(col)`` over all time, and the test's database."""
    query = re.sub(
        r"\$__timeFilter\(([^()]*(?:\([^()]*\))?[^()]*)\)",
        r"(\1 >= toDateTime(0) AND \1 <= toDateTime(4102444800))",
        query,
    )
    return query.replace("callpulse.", f"{database}.")
