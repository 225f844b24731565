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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("start-up", "stage 1", "all")


def run_engine(arrivals_path: str, stage: str) -> None:
    """The measured work (in the child, under valgrind)."""
    import orjson

    from callpulse.config import Settings
    from streams.app import tune_gc
    from streams.early_warning.detector import EarlyWarningDetector
    from streams.engine import messages_of, partial_records
    from streams.merge import MergeParams
    from streams.pipeline import LocalPipeline, final_record
    from streams.sources import EngineParams

    with open(arrivals_path, "rb") as f:
        arrivals = pickle.load(f)
    s = Settings()
    tune_gc(s)
    if stage == "start-up":
        return
    detector = EarlyWarningDetector.from_settings(s)

    class Measured(LocalPipeline):
        def flush(self) -> list:
            self.engine.settle()
            drained = self.engine.drain()
            for group in drained.groups():
                for (_, key), value in group.items():
                    orjson.dumps(key)
                    orjson.dumps(value)
            sent = partial_records(drained.messages)
            if stage == "stage 1":
                return []
            for _, value in sent:
                for m in messages_of(value):
                    self.merger.on_message(m)
            records = [final_record(fw, self.thresholds, self.variant) for fw in self.merger.finalize()]
            for r in records:
                r.to_json()
            detector.observe(records)
            detector.drain_staffing()
            if self.merger.s.next_window is not None:
                self.merger.prune_history(self.merger.s.next_window)
            for value in {**self.merger.drain_state(), **detector.drain_state()}.values():
                orjson.dumps(value)
            return []

    Measured(EngineParams(), MergeParams.from_settings(s), 4).feed(arrivals, batch=5000)


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--child", nargs=2, metavar=("STAGE", "ARRIVALS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_engine(args.child[1], args.child[0])
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind (make bench-instructions does)")

    from benchmarks.bench_kpi_engine import events, final_watermark
    from streams.compiled import engine_mode
    from streams.reference import arrivals_from_events

    evs = events(args.events)
    logs = Path(tempfile.mkdtemp(prefix="callpulse-instructions-"))
    path = logs / "arrivals.pkl"
    with open(path, "wb") as f:
        pickle.dump(list(arrivals_from_events(evs, 4, final_watermark(evs))), f)
    print(f"{len(evs)} events of the large center; KPI engine: {engine_mode()}; valgrind output in {logs}")
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
