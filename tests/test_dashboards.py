"""The provisioned Grafana material is consistent: dashboards are what the generator makes,
datasources match the dashboards' uids, every query names metrics the worker exports or tables
the migrations create. (Every query is also executed: PromQL in test_alerting.py against a real
Prometheus, SQL in test_clickhouse_sink.py against ClickHouse 18.16 and chdb.)"""

from __future__ import annotations

import importlib.util
import re

import yaml

from tests.dashboards import DASHBOARDS, targets
from tests.services import REPO


def test_dashboards_are_generated_from_the_source() -> None:
    spec = importlib.util.spec_from_file_location("dashboards", REPO / "deploy" / "grafana" / "dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered = module.render()
    on_disk = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert rendered == on_disk, "run `python deploy/grafana/dashboards.py` and commit the JSON"


def test_datasources_provision_the_uids_the_dashboards_use() -> None:
    doc = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/callpulse.yml").read_text())
    uids = {d["uid"]: d["type"] for d in doc["datasources"]}
    assert uids == {"prometheus": "prometheus", "clickhouse": "grafana-clickhouse-datasource"}
    used = {(t["datasource"]["uid"], t["datasource"]["type"]) for kind in uids.values() for _, _, t in targets(kind)}
    assert used == set(uids.items())


def test_every_promql_metric_is_exported_or_recorded() -> None:
    from prometheus_client import generate_latest

    from sinks.metrics import SinkMetrics, WorkerMetrics

    exported = generate_latest(WorkerMetrics().registry).decode() + generate_latest(SinkMetrics().registry).decode()
    names = set(re.findall(r"^# TYPE (\w+)", exported, re.M))
    names |= {n + s for n in names for s in ("_bucket", "_count", "_sum")}
    recorded = set(re.findall(r"record: (\S+)", (REPO / "deploy/prometheus/rules/recording.yml").read_text()))
    for dashboard, title, t in targets("prometheus"):
        for metric in re.findall(r"\b((?:callpulse|process)[:_][\w:]+)", t["expr"]):
            assert metric in names | recorded, f"{dashboard} / {title}: {metric}"
