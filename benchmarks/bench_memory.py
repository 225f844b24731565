"""Memory over a long run: does the KPI engine's RSS stay flat as events keep coming?

    python benchmarks/bench_memory.py [--events 10000000] [--every 1000000]

Streams simulated days of the large center of ``bench_kpi_engine`` (calls, tickets, surveys,
agent states; 24 h per day, a new seed per day, customers coming back across days) through the
KPI engine in process: stage 1 sources of 4 partitions, the stage-2 merger (its state drained as
the worker drains it), the early-warning detector, final records built and dropped. It prints
the process RSS every ``--every`` events. Entity facts are kept for 24 h of event time
(repeats, orphans, the survey join), customers' history for the repeat horizons (7 days for
complaints) and closed windows leave, so the RSS should level off after a week of event time;
this measures it. No Kafka: the worker's tables hold the same state entries as the engine, so
the engine's state is what could grow.
"""

from __future__ import annotations

import argparse
import gc
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_kpi_engine import LARGE_CENTER  # noqa: E402

from callpulse.config import Settings  # noqa: E402
from callpulse.simulator import SimConfig, simulate  # noqa: E402
from schemas.events import TicketEvent, TicketEventKind  # noqa: E402
from streams.app import tune_gc  # noqa: E402
from streams.early_warning.detector import EarlyWarningDetector  # noqa: E402
from streams.merge import MergeParams  # noqa: E402
from streams.pipeline import LocalPipeline  # noqa: E402
from streams.reference import arrivals_from_events  # noqa: E402
from streams.sources import EngineParams  # noqa: E402


def rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def days(partitions: int) -> Iterator[list]:
    """One simulated day of arrivals at a time (generated lazily: 10M events do not fit in a list)."""
    day = 0
    while True:
        start = datetime(2026, 11, 2, tzinfo=UTC) + timedelta(days=day)
        cfg = SimConfig(
            start=start,
            duration=timedelta(hours=24),
            seed=100 + day,
            queues=LARGE_CENTER,
            agents=400,
            ticket_rate_per_hour=600,
            customers=200_000,
        )
        end = (start + timedelta(hours=24)).timestamp()
        events = [fe for fe in simulate(cfg) if fe[1].ts.timestamp() < end]
        yield arrivals_from_events(close_open_tickets(events, end), partitions)
        day += 1


def close_open_tickets(events: list, end: float) -> list:
    """The simulator runs one day at a time and cuts the tickets still open at its end (their
    later events fall into no day): close them at the day's last second, or every day would add
    about 4,000 tickets open forever to the state, an artefact of the generator. (A ticket that
    is never closed stays in the backlog and in the state: see docs/performance.md.)"""
    last: dict[str, TicketEvent] = {}
    for family, e in events:
        if family == "tickets":
            last[e.ticket_id] = e
    closing = [
        ("tickets", e.model_copy(update={"event_id": f"{e.event_id}-close", "kind": TicketEventKind.closed, "ts": at}))
        for e in last.values()
        if e.kind is not TicketEventKind.closed
        for at in [datetime.fromtimestamp(end - 1, UTC)]
    ]
    return sorted(events + closing, key=lambda fe: fe[1].ts)


class DroppingPipeline(LocalPipeline):
    """Feeds final records to the early-warning detector (as the worker does), then drops them."""

    emitted = 0
    detector: EarlyWarningDetector

    def flush(self):  # type: ignore[no-untyped-def]
        out = super().flush()
        self.detector.observe(self.records)
        self.detector.drain_staffing()
        self.detector.drain_state()
        self.emitted += len(self.records)
        self.records.clear()
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--every", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()
    s = Settings()
    tune_gc(s)  # the worker's garbage collector settings
    params = EngineParams.from_settings(s)
    pipe = DroppingPipeline(params, MergeParams.from_settings(s), args.partitions)
    pipe.detector = EarlyWarningDetector.from_settings(s)
    fed, next_mark, busy = 0, args.every, 0.0
    head = f"{'events':>11} {'sim days':>8} {'RSS MiB':>8} {'facts':>9} {'customers':>9} {'records':>10} {'ev/s':>7}"
    print(head, flush=True)
    for day, arrivals in enumerate(days(args.partitions), start=1):
        take = arrivals[: args.events - fed]
        t0 = time.perf_counter()
        pipe.feed(take, batch=5000)
        busy += time.perf_counter() - t0
        fed += len(take)
        if fed >= next_mark or fed >= args.events:
            gc.collect()
            facts = sum(len(src.facts) for src in pipe.engine.sources())
            customers = len(pipe.merger.s.history)
            print(
                f"{fed:>11,} {day:>8} {rss_mib():>8.0f} {facts:>9,} {customers:>9,} {pipe.emitted:>10,} "
                f"{fed / busy:>7,.0f}",
                flush=True,
            )
            next_mark += args.every
        if fed >= args.events:
            break


if __name__ == "__main__":
    main()
