"""The command line: simulate a period, then audit it with the batch reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callpulse", *args], capture_output=True, text=True, check=True)


def test_simulate_then_recompute(tmp_path: Path) -> None:
    events = tmp_path / "h.jsonl"
    cli("simulate", "--out", str(events), "--hours", "1", "--seed", "5")
    lines = events.read_text().splitlines()
    assert len(lines) > 200
    res = cli("kpis", "recompute", str(events), "--watermark-after", "300")
    records = [json.loads(line) for line in res.stdout.splitlines()]
    counts = json.loads(res.stderr.strip().splitlines()[-1])
    assert counts == {"accepted": len(lines), "late": 0, "duplicate": 0}
    hours = [r for r in records if r["window_size_s"] == 3600 and r["dimension"] == "all"]
    offered = sum(1 for line in lines if '"kind":"offered"' in line)
    assert sum(r["offered"] for r in hours) == offered
    table = cli(
        "kpis", "recompute", str(events), "--format", "table", "--dimension", "queue", "--watermark-after", "300"
    )
    assert "billing" in table.stdout and "offered" in table.stdout
