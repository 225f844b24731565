"""What a jump of stream time costs: a partition whose first event is hours to months early.

    python benchmarks/bench_clock_jump.py [--hours 16,200,7300] [--timeout 120]

A one-hour simulated center (calls, tickets, surveys, agent states; one partition) is fed in
process, preceded by one event ``H`` hours early: a call offered, or an agent going ready (a
device clock set wrong, a replayed record). Stream time then jumps by ``H`` at the center's
first event. Printed per case: the KPI records and the seconds the feed took (in process, the
compiled engine when built). Silence is zero-filled for ``CALLPULSE_ZERO_FILL_HORIZON_S`` after
a value's last data and an agent state lasts at most ``CALLPULSE_AGENT_STATE_TIMEOUT_S``: the
cost stops growing with the gap beyond them. Each case runs in a child process with a time
limit, so a case that would run for hours prints as such.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

START = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


def run_case(hours: float, family: str) -> None:
    """The child: feed the center with the early event first, print records and seconds."""
    from callpulse.config import Settings
    from callpulse.simulator import SimConfig, simulate
    from schemas.events import AgentState, AgentStateEvent, CallEvent, CallEventKind, Channel
    from streams.merge import MergeParams
    from streams.pipeline import LocalPipeline
    from streams.reference import arrivals_from_events
    from streams.sources import EngineParams

    settings = Settings()
    events = simulate(SimConfig(start=START, duration=timedelta(hours=1), seed=1))
    early = START - timedelta(hours=hours)
    first = (
        ("calls", CallEvent(event_id="early", ts=early, kind=CallEventKind.offered, contact_id="c-early",
                            queue="billing", channel=Channel.phone))
        if family == "calls"
        else ("agents", AgentStateEvent(event_id="early", ts=early, agent_id="a-early", state=AgentState.ready,
                                        queues=["billing"]))
    )  # fmt: skip
    final = max(e.ts.timestamp() for _, e in events) + 600
    arrivals = arrivals_from_events([first, *events], 1, final_watermark=final)
    pipe = LocalPipeline(EngineParams.from_settings(settings), MergeParams.from_settings(settings), 1)
    started = time.perf_counter()
    pipe.feed(arrivals, batch=500)
    print(f"{len(pipe.records)} {time.perf_counter() - started:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", default="0,16,200,7300", help="how early the first event is, comma-separated")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per case")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_case(float(args.child[0]), args.child[1])
        return
    import streams.pipeline  # noqa: F401 - the engine modules the children load, for engine_mode
    from callpulse.config import Settings
    from streams.compiled import engine_mode

    s = Settings()
    print(
        f"one-hour center, one partition; zero-fill horizon {s.zero_fill_horizon_s} s, agent state timeout "
        f"{s.agent_state_timeout_s} s; KPI engine: {engine_mode()}"
    )
    print(f"{'first event':>22}  {'early by':>10}  {'KPI records':>11}  {'seconds':>8}")
    for family in ("calls", "agents"):
        for hours in (float(h) for h in args.hours.split(",")):
            cmd = [sys.executable, __file__, "--child", str(hours), family]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=True)
                records, seconds = out.stdout.split()
            except subprocess.TimeoutExpired:
                records, seconds = "-", f">{args.timeout:.0f}"
            what = "a call" if family == "calls" else "an agent state"
            print(f"{what:>22}  {hours:>9g}h  {records:>11}  {seconds:>8}")


if __name__ == "__main__":
    main()
