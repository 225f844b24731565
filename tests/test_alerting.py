"""Paging end to end with the real servers: a worker on the real broker, Debian's Prometheus
(scraping it, with the repo's rules) and Alertmanager (with the repo's routing), and a local
webhook receiver. A service-level collapse on one queue pages the duty manager for that queue
and not for the healthy one; after recovery the page resolves. The rule files themselves are
checked by promtool / amtool (unit tests for every alert)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from callpulse.embedded import free_port
from callpulse.simulator import SimConfig, simulate
from schemas.events import CallEvent, CallEventKind, Channel
from streams.kafka import EventProducer
from tests.dashboards import promql
from tests.dashboards import targets as dashboard_targets
from tests.services import REPO, AlertmanagerServer, PrometheusServer, WebhookReceiver, wait_until

PAGE, OPS = "/page", "/ops"
PLACEHOLDERS = {"http://duty-manager-webhook.invalid/page": PAGE, "http://ops-channel-webhook.invalid/notify": OPS}


def test_promtool_rule_unit_tests_pass() -> None:
    prom = REPO / "deploy" / "prometheus"
    check = subprocess.run(
        ["promtool", "check", "rules", "rules/recording.yml", "rules/alerts.yml"], cwd=prom, capture_output=True
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    test = subprocess.run(["promtool", "test", "rules", "tests/alerts_test.yml"], cwd=prom, capture_output=True)
    assert test.returncode == 0, test.stdout.decode() + test.stderr.decode()
    config = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=prom, capture_output=True)
    assert config.returncode == 0, config.stdout.decode() + config.stderr.decode()


def test_alertmanager_config_and_routes() -> None:
    am = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
    check = subprocess.run(["amtool", "check-config", str(am)], capture_output=True)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()

    def route(*labels: str) -> str:
        out = subprocess.run(
            ["amtool", "config", "routes", "test", f"--config.file={am}", *labels], capture_output=True, text=True
        )
        return out.stdout.strip()

    assert route("severity=red", "dimension=queue", "value=billing") == "duty-manager"
    assert route("severity=orange", "dimension=queue", "value=billing") == "ops-channel"
    assert route("severity=yellow") == "ops-channel"


def calls(queue: str, start: datetime, minutes: int, per_minute: int, wait_s: float, tag: str) -> list[tuple[str, Any]]:
    """Contacts offered evenly, answered after ``wait_s``, ended two minutes later."""
    out: list[tuple[str, Any]] = []
    n = 0
    for m in range(minutes):
        for i in range(per_minute):
            n += 1
            t = start + timedelta(minutes=m, seconds=i * 60 / per_minute)
            cid = f"{tag}-{queue}-{n}"
            common = {"contact_id": cid, "queue": queue, "channel": Channel.phone, "business_type": "retail"}
            out.append(("calls", CallEvent(event_id=f"{cid}-o", ts=t, kind=CallEventKind.offered, **common)))
            answered = t + timedelta(seconds=wait_s)
            out.append(
                (
                    "calls",
                    CallEvent(
                        event_id=f"{cid}-a",
                        ts=answered,
                        kind=CallEventKind.answered,
                        agent_id="agent-1",
                        wait_seconds=wait_s,
                        **common,
                    ),
                )
            )
            out.append(
                (
                    "calls",
                    CallEvent(
                        event_id=f"{cid}-e",
                        ts=answered + timedelta(seconds=120),
                        kind=CallEventKind.ended,
                        agent_id="agent-1",
                        talk_seconds=110.0,
                        acw_seconds=10.0,
                        **common,
                    ),
                )
            )
    return out


async def produce(pipe: Any, events: list[tuple[str, Any]], watermark: float, garbage: bool = False) -> None:
    async with EventProducer(pipe.settings) as prod:
        await prod.send_events(sorted(events, key=lambda fe: fe[1].ts), 20)
        if garbage:  # one record that is not an event: a dead letter
            await prod.producer.send_and_wait(pipe.topics.calls, b'{"kind": "offered"}', key=b"bad", partition=0)
        await prod.send_watermarks(watermark)


def pages(hook: WebhookReceiver, status: str) -> set[tuple[str, str, str]]:
    return {
        (a["labels"]["alertname"], a["labels"].get("dimension", ""), a["labels"].get("value", ""))
        for a in hook.alerts(PAGE)
        if a["status"] == status
    }


@pytest.fixture()
def observability(tmp_path: Path) -> Any:
    for binary in ("prometheus", "prometheus-alertmanager"):
        if shutil.which(binary) is None:
            raise FileNotFoundError(f"{binary} is not installed: run `make test` (it installs it)")
    hook = WebhookReceiver()
    am = AlertmanagerServer(tmp_path / "am", {k: hook.url(v) for k, v in PLACEHOLDERS.items()}).start()
    started: list[Any] = [hook, am]

    def prometheus(targets: dict[str, list[str]]) -> PrometheusServer:
        p = PrometheusServer(tmp_path / "prom", targets, f"127.0.0.1:{am.port}").start()
        started.append(p)
        return p

    yield hook, prometheus
    for s in reversed(started):
        s.stop()


@pytest.mark.slow
def test_service_level_collapse_pages_the_duty_manager_for_that_queue(
    pipeline_factory: Any, observability: Any, tmp_path: Path
) -> None:
    hook, prometheus = observability
    pipe = pipeline_factory(partitions=2, grace_s=60, idle_timeout_s=900.0)
    port, sink_port = free_port(), free_port()
    pipe.start_worker(CALLPULSE_METRICS_PORT=str(port)).wait_ready()
    sink_env = {"CALLPULSE_DATA_DIR": str(tmp_path / "var"), "CALLPULSE_SINK_METRICS_PORT": str(sink_port)}
    pipe.start_sink(**sink_env).wait_ready()
    prom = prometheus({"callpulse-worker": [f"127.0.0.1:{port}"], "callpulse-sink": [f"127.0.0.1:{sink_port}"]})
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=50)

    # 15 minutes in which billing answers after 200 s (service level 0 %) and tech after 5 s;
    # agents, tickets and surveys of the same quarter hour from the simulator
    bad = calls("billing", t0, 15, 4, 200.0, "p1") + calls("tech", t0, 15, 12, 5.0, "p1")
    others = simulate(SimConfig(start=t0, duration=timedelta(minutes=15), seed=5))
    bad += [(f, e) for f, e in others if f in ("agents", "tickets", "surveys")]
    asyncio.run(produce(pipe, bad, (t0 + timedelta(minutes=20)).timestamp(), garbage=True))
    started = time.monotonic()
    wait_until(lambda: ("ServiceLevelCollapse", "queue", "billing") in pages(hook, "firing"), 180, 1, "the red page")
    print(f"red page {time.monotonic() - started:.0f} s after the data was produced")
    firing = [
        a for a in hook.alerts(PAGE) if a["status"] == "firing" and a["labels"]["alertname"] == "ServiceLevelCollapse"
    ]
    billing = next(a for a in firing if a["labels"].get("value") == "billing")
    assert billing["labels"]["severity"] == "red"
    assert billing["annotations"]["description"].startswith("queue billing: 30-second service level 0%")
    assert billing["annotations"]["runbook_url"].endswith("docs/runbooks/ServiceLevelCollapse.md")
    assert not any(a["labels"].get("value") == "tech" for a in hook.alerts(PAGE))
    # the gauges the page is built from, as Prometheus scraped them
    sl = {
        r["metric"]["value"]: float(r["value"][1])
        for r in prom.query('callpulse_service_level_ratio{dimension="queue",threshold_seconds="30"}')
    }
    assert sl["billing"] == 0.0 and sl["tech"] == 1.0

    # every PromQL query of the provisioned dashboards returns data from this Prometheus
    wait_until(lambda: bool(prom.query("callpulse_sink_insert_duration_seconds_bucket")), 60, 1, "sink metrics")
    time.sleep(5)  # a few scrapes of everything, for rate() windows
    queries = dashboard_targets("prometheus")
    empty = [f"{d} / {title}: {t['expr']}" for d, title, t in queries if not prom.query(promql(t["expr"]))]
    assert len(queries) > 25
    assert empty == []

    # recovery: 20 good minutes push the bad ones out of the 15-minute lookback
    good = calls("billing", t0 + timedelta(minutes=15), 20, 4, 5.0, "p2") + calls(
        "tech", t0 + timedelta(minutes=15), 20, 12, 5.0, "p2"
    )
    asyncio.run(produce(pipe, good, (t0 + timedelta(minutes=40)).timestamp()))
    wait_until(
        lambda: ("ServiceLevelCollapse", "queue", "billing") in pages(hook, "resolved"), 240, 1, "the resolution"
    )
    assert not prom.query('callpulse_warning_active{rule="service_level_collapse",value="billing"}')
