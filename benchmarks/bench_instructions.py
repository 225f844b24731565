"""Instructions per event of the KPI engine, counted by valgrind: a figure that does not move
with the machine's load.

    python benchmarks/bench_instructions.py [--events 20000]

On a shared 2-core machine the same timed run varies by 20-30 %, more than most single
optimisations gain; an instruction count (valgrind's cachegrind, ``I refs``) is the same from
run to run, so a change to the engine can be measured before and after on its own. It counts
work, not time (no cache misses, no waiting), and the engine runs some 50 times slower under
valgrind, so a few tens of thousands of events are enough.

The events are the engine benchmark's large center (``bench_kpi_engine.events``), the first
``--events`` of them with a final watermark. The engine runs in process as
``LocalPipeline`` does, with what the worker adds per batch of 5,000 records: the state entries
and partial messages serialised (orjson), the detector with the shipped rules and the records
serialised. Three runs under valgrind: start-up only, stage 1 (sources, drain, serialisation)
and everything; the differences, per event, are printed.

    python benchmarks/bench_instructions.py --seconds [--events 100000] [--batch 100000]

times the same work in process instead, part by part (the sources, their serialised state and
messages, the merge stage's parts, the detector, garbage collection), with the worker's garbage
collection policy: where a catch-up's seconds go (``--batch`` the whole backlog: the worker's
catch-up, which takes it in one batch).

``--runs N`` (both modes) feeds each partition's events in runs of N, round robin over the
partitions, each partition's own order kept: how the worker's consumer hands over a backlog
(a fetch returns a run of records per partition; envelopes of 100, about 33 records a run in the
engine benchmark: ``--runs 3300``). A partition then runs hours of event time ahead of another,
which the global event-time order (the default) never shows.

``--scale N`` (both modes) takes the events of a center N times larger, as ``bench_kpi_engine``'s
``--scale``: N times the traffic and agents per minute of event time, so stage 2's work per
window is spread over N times the events and stage 1's per-event work is what remains.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("start-up", "stage 1", "all")


def run_engine(arrivals_path: str, stage: str, seconds: dict[str, float] | None = None, batch: int = 5000) -> None:
    """The measured work (in the child, under valgrind; or in process with ``seconds``, which
    then gets the wall time of each part of the batches' work added up)."""
    import time

    import orjson

    from callpulse.config import Settings
    from streams.app import BatchGc, tune_gc
    from streams.early_warning.detector import EarlyWarningDetector
    from streams.engine import messages_of, partial_records
    from streams.merge import MergeParams
    from streams.pipeline import LocalPipeline, final_record
    from streams.sources import EngineParams

    with open(arrivals_path, "rb") as f:
        arrivals = pickle.load(f)
    s = Settings()
    # under valgrind Python's trigger, tuned as in-process runs have it (the figures of earlier
    # runs stay comparable); timed in process, the worker's own policy, its pauses with the parts
    gc_policy = BatchGc(s.gc_young_every_s, s.gc_full_every_s) if seconds is not None else None
    if gc_policy is None:
        tune_gc(s)
    else:
        gc_policy.start()
    if stage == "start-up":
        return
    detector = EarlyWarningDetector.from_settings(s)

    last = 0.0  # when the last lap ended (set again just before the feed)

    def lap(part: str) -> None:
        """Add the time since the last lap to ``part`` (in process only)."""
        nonlocal last
        if seconds is not None:
            now = time.perf_counter()
            seconds[part] = seconds.get(part, 0.0) + now - last
            last = now

    class Measured(LocalPipeline):
        def flush(self) -> list:
            self.work()
            if gc_policy is not None:  # as the worker: after the batch, its transient objects gone
                gc_policy.after_batch()
                lap("garbage collection between batches")
            return []

        def work(self) -> None:
            lap("stage 1: sources (decoded events into partial state, window closes)")
            self.engine.settle()
            drained = self.engine.drain()
            for group in drained.groups():
                for (_, key), value in group.items():
                    orjson.dumps(key)
                    orjson.dumps(value)
            sent = partial_records(drained.messages)
            lap("stage 1: state entries and partial messages, serialised")
            if stage == "stage 1":
                return
            for _, value in sent:
                for m in messages_of(value):
                    self.merger.on_message(m)
            lap("stage 2: partial messages decoded and taken in")
            finals = self.merger.finalize()
            lap("stage 2: final windows (merges, levels, repeats, rollups)")
            records = [final_record(fw, self.thresholds, self.variant) for fw in finals]
            lap("stage 2: KPI records")
            for r in records:
                r.to_json()
            lap("stage 2: KPI records serialised")
            detector.observe(records)
            detector.drain_staffing()
            lap("stage 2: detector (rules, seasonal, staffing)")
            if self.merger.s.next_window is not None:
                self.merger.prune_history(self.merger.s.next_window)
            for value in {**self.merger.drain_state(), **detector.drain_state()}.values():
                orjson.dumps(value)
            lap("stage 2: merge and detector state, serialised")

    pipeline = Measured(EngineParams(), MergeParams.from_settings(s), 4)
    last = time.perf_counter()
    pipeline.feed(arrivals, batch=batch)


def instructions(arrivals_path: str, stage: str, logs: Path) -> int:
    out = logs / f"cachegrind-{stage.replace(' ', '-')}.out"
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            f"--cachegrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            stage,
            arrivals_path,
        ],
        cwd=REPO,
        # string hashing is randomised per process: set and dict orders, and with them the
        # instruction counts, then differ by about 1 % between identical runs
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind run ({stage}) failed:\n{proc.stderr[-3000:]}")
    return int(found.group(1).replace(",", ""))


def print_seconds(arrivals_path: str, n: int, batch: int, mode: str, center: str) -> None:
    """Wall time of each part of the engine's work, in process (a machine's load moves these
    figures, unlike instruction counts; they say where a catch-up's seconds go)."""
    seconds: dict[str, float] = {}
    run_engine(arrivals_path, "all", seconds, batch)
    total = sum(seconds.values())
    print(f"{n} events of {center} in batches of {batch}; KPI engine: {mode}")
    print(f"\n{'part':72} {'seconds':>8} {'share':>6} {'us/event':>9}")
    for part, secs in seconds.items():
        print(f"{part:72} {secs:>8.3f} {secs / total:>6.1%} {secs / n * 1e6:>9.1f}")
    print(f"{'all':72} {total:>8.3f} {1:>6.1%} {total / n * 1e6:>9.1f}")


def in_runs(arrivals: list, run: int) -> list:
    """``arrivals`` reordered as a consumer hands a backlog over: ``run`` of one partition's, then
    ``run`` of the next one's, round robin, each partition's own order kept."""
    queues: dict[tuple[str, int], deque] = {}
    for a in arrivals:
        queues.setdefault((a.family, a.partition), deque()).append(a)
    out: list = []
    while queues:
        for key in list(queues):
            q = queues[key]
            out.extend(q.popleft() for _ in range(min(run, len(q))))
            if not q:
                del queues[key]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument(
        "--seconds",
        action="store_true",
        help="no valgrind: time each part of the same work in process, with the worker's garbage collection",
    )
    ap.add_argument(
        "--batch", type=int, default=5000, help="events per batch with --seconds (the whole backlog: a catch-up)"
    )
    ap.add_argument(
        "--scale",
        type=int,
        default=1,
        help="a center this many times larger (bench_kpi_engine's --scale): more events per minute of event time",
    )
    ap.add_argument(
        "--runs",
        type=int,
        default=0,
        help="each partition's events in runs of this many, round robin (a worker's fetches); 0: event-time order",
    )
    ap.add_argument("--child", nargs=2, metavar=("STAGE", "ARRIVALS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_engine(args.child[1], args.child[0])
        return
    if not args.seconds and shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind (make bench-instructions does)")

    from benchmarks.bench_kpi_engine import events, final_watermark
    from streams.compiled import engine_mode
    from streams.reference import arrivals_from_events

    evs = events(args.events, args.scale)
    center = "the large center" if args.scale == 1 else f"the large center x{args.scale}"
    if args.runs:
        center += f", each partition in runs of {args.runs} events"
    logs = Path(tempfile.mkdtemp(prefix="callpulse-instructions-"))
    path = logs / "arrivals.pkl"
    with open(path, "wb") as f:
        arrivals = list(arrivals_from_events(evs, 4, final_watermark(evs)))
        pickle.dump(in_runs(arrivals, args.runs) if args.runs else arrivals, f)
    if args.seconds:
        print_seconds(str(path), len(evs), args.batch, engine_mode(), center)
        return
    print(f"{len(evs)} events of {center}; KPI engine: {engine_mode()}; valgrind output in {logs}")
    counts = {}
    for stage in STAGES:
        print(f"  {stage} under valgrind ...", file=sys.stderr, flush=True)
        counts[stage] = instructions(str(path), stage, logs)
    n = len(evs)
    stage1 = counts["stage 1"] - counts["start-up"]
    stage2 = counts["all"] - counts["stage 1"]
    print(f"\n{'part':58} {'instructions':>15} {'per event':>10}")
    for label, value in (
        ("stage 1 (sources, state entries, partial messages)", stage1),
        ("stage 2 (merge, records, detector, their state)", stage2),
        ("engine", stage1 + stage2),
    ):
        print(f"{label:58} {value:>15,} {value / n:>10,.0f}")
    if os.environ.get("CALLPULSE_PURE_PYTHON"):
        print("(CALLPULSE_PURE_PYTHON is set: the engine's sources were measured, not the compiled modules)")


if __name__ == "__main__":
    main()
