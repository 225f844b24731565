"""What every peer contender computes, and how it reports (one JSON line on stdout).

The aggregation all peers run on the same topics: per queue and 1-minute tumbling window of
event time, calls offered, abandoned and the mean wait of answered and abandoned calls; events
of the other families are decoded and counted. (callpulse computes every KPI of docs/kpis.md on
the same stream: the peers do strictly less work.)
"""

from __future__ import annotations

import json
import os
import resource
import time
from datetime import datetime
from typing import Any


class Window:
    __slots__ = ("abandoned", "offered", "wait_n", "wait_sum")

    def __init__(self) -> None:
        self.offered = self.abandoned = self.wait_n = 0
        self.wait_sum = 0.0


def window_key(event: dict[str, Any]) -> tuple[str, int]:
    ts = datetime.fromisoformat(event["ts"]).timestamp()
    return event["queue"], int(ts // 60) * 60


def apply(w: Window, event: dict[str, Any]) -> None:
    kind = event["kind"]
    if kind == "offered":
        w.offered += 1
    elif kind in ("answered", "abandoned"):
        w.wait_n += 1
        w.wait_sum += event.get("wait_seconds") or 0.0
        if kind == "abandoned":
            w.abandoned += 1


def peak_rss_mib() -> float:
    """VmHWM of this process (ru_maxrss would include the parent's size at fork)."""
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


class Progress:
    """Counts events and reports events/s from the first to the last one, CPU and peak RSS."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.n = 0
        self.first: float | None = None
        self.last = 0.0

    def add(self, k: int = 1) -> bool:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.n += k
        self.last = now
        return self.n >= self.total

    def report(self, **extra: Any) -> None:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        span = self.last - (self.first or self.last)
        out = {
            "events": self.n,
            "events_per_s": self.n / span if span > 0 else None,
            "cpu_s": ru.ru_utime + ru.ru_stime,
            "peak_rss_mib": peak_rss_mib(),
            **extra,
        }
        os.write(1, (json.dumps(out) + "\n").encode())  # fd 1: faust redirects sys.stdout to its log
