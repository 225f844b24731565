"""The backtest on the simulator: nine days of a normally staffed center (one week of history
for the profile), then a Tuesday with three injected incidents (a line outage on one queue, a
2.5x surge on another, a staffing drop everywhere). Every incident gets a red warning, and no
red warning is raised outside an incident window."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from callpulse.cli import main

INCIDENTS = ["outage:tech:203:1", "surge:billing:206:1:2.5", "staffing_drop::208:1:0.3"]


@pytest.mark.slow
def test_simulated_incidents_are_all_red_and_nothing_else_is(tmp_path: Path) -> None:
    events, labels = tmp_path / "days.jsonl", tmp_path / "labels.json"
    runner = CliRunner()
    args = ["simulate", "--out", str(events), "--hours", "216", "--start", "2026-11-02T00:00:00+00:00"]
    args += ["--seed", "11", "--labels", str(labels)]
    for inc in INCIDENTS:
        args += ["--incident", inc]
    assert runner.invoke(main, args).exit_code == 0
    assert len(json.loads(labels.read_text())) == 3
    result = runner.invoke(main, ["backtest", str(events), "--labels", str(labels), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    print(json.dumps(report["overall"]))
    overall = report["overall"]
    assert overall["red_recall"] == 1.0
    assert overall["red_outside_incidents"] == 0
    assert overall["recall"] == 1.0
    assert overall["max_delay_s"] <= 1800  # every incident warned within 30 minutes
    # each incident kind is caught by the rule meant for it
    assert report["volume_anomaly_drop"]["red_recall"] > 0  # the outage
    assert report["volume_anomaly_surge"]["red_recall"] > 0  # the surge
    assert report["service_level_collapse"]["red_recall"] > 0  # the staffing drop
