"""`callpulse demo` end to end (what `make demo` runs), for a short duration: it exits 0, the
embedded ClickHouse holds KPI windows and a red warning from the scheduled staffing drop, the
metrics endpoint served KPI gauges, a worker that exits is started again, and nothing is left
running."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from callpulse.embedded import free_port
from sinks.clickhouse_client import ChdbClient
from tests.services import REPO


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_demo_runs_end_to_end_and_leaves_data_and_no_processes(tmp_path: Path) -> None:
    """The worker's first write fails (injected: ``tests/faults/sitecustomize.py``, the one mock
    here); it exits, and the demo starts it again as an orchestrator would."""
    broker, metrics, sink_metrics = free_port(), free_port(), free_port()
    trigger = tmp_path / "fail-the-next-write"
    trigger.touch()
    env = {
        "PYTHONPATH": str(REPO / "tests" / "faults"),
        "CALLPULSE_FAULT_TRIGGER": str(trigger),
        "PATH": "/usr/bin:/bin",
        "CALLPULSE_DATA_DIR": str(tmp_path / "var"),
        "CALLPULSE_EMBEDDED_BROKER_PORT": str(broker),
        "CALLPULSE_METRICS_PORT": str(metrics),
        "CALLPULSE_SINK_METRICS_PORT": str(sink_metrics),
        "CALLPULSE_APP_ID": "callpulse-demo-test",
        "COLUMNS": "160",
    }
    done = subprocess.run(
        [sys.executable, "-m", "callpulse", "demo", "--duration", "100", "--speed", "120"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    served = re.search(r"metrics endpoint served (\d+) KPI gauge series", out)
    assert served and int(served.group(1)) > 20, out[-2000:]
    incident = re.search(r"staffing drop to 35 % (\d\d:\d\d)-(\d\d:\d\d) UTC", out)
    assert incident, out[:2000]
    assert "callpulse query" in out and "embedded chdb at" in out
    assert not trigger.exists() and "worker exited with code 1" in out and "starting it again" in out
    for port in (broker, metrics, sink_metrics):
        assert not port_open(port), f"port {port} still served after the demo"

    client = ChdbClient(tmp_path / "var" / "chdb")
    try:
        windows = int(client.execute("SELECT count() FROM callpulse.kpi_window FINAL").scalar())
        assert windows > 500
        reds = client.execute(
            "SELECT rule, dimension_value, toString(started_at) FROM callpulse.warnings FINAL "
            "WHERE level = 'red' AND change IN ('opened', 'escalated')"
        ).rows
    finally:
        client.close()
    assert reds, "no red warning in ClickHouse"
    lo, hi = incident.group(1), incident.group(2)
    # the red warnings come from the staffing drop: they start after it began, before it ended + 30 min
    starts = [datetime.fromisoformat(s[:19]).strftime("%H:%M") for _, _, s in reds]
    assert all(lo <= t for t in starts), (starts, lo, hi)
    assert any(r == "service_level_collapse" for r, _, _ in reds)
