"""What the worker writes to its changelogs per event: bytes and CPU of persisting.

    python benchmarks/bench_state_writes.py [--rate 10000] [--seconds 30] [--batch 2000]
    python benchmarks/bench_state_writes.py --replay --events 300000 --batch 5000

Live (the default): the large center's events retimed to arrive at a constant ``rate`` with
event time at wall speed (as ``bench_peers.py --latency-time live``), fed to the pure engine (no
Kafka) in batches of ``batch`` events (about what the worker's 0.1-0.2 s batches hold at that
rate). ``--replay``: ``events`` events at their simulated times (hours of event time: a
catch-up, where windows close and stage 2 has work). After each batch stage 1 is drained and
every table entry serialised as the worker writes it; its partial messages go to stage 2 (the
merger and the detector, as the worker's merge batch runs them), whose changelog entries are
counted the same way. Printed: CPU seconds of the events' processing and of persisting, bytes
written per kind of entry and per event, and the garbage collector's longest pauses.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_kpi_engine import events  # noqa: E402
from bench_peers import retime  # noqa: E402

from callpulse.config import Settings  # noqa: E402
from streams.app import tune_gc  # noqa: E402
from streams.early_warning.detector import EarlyWarningDetector  # noqa: E402
from streams.engine import KpiEngine  # noqa: E402
from streams.merge import MergeParams, WindowMerger  # noqa: E402
from streams.pipeline import expected_sources, final_record  # noqa: E402
from streams.reference import FAMILIES, arrivals_from_events  # noqa: E402
from streams.sources import EngineParams  # noqa: E402

KINDS = {"x": "window chunks", "w": "windows", "f": "entity facts", "d": "dedup logs", "m": "source metas"}
MERGE_KINDS = {
    "pend": "pending partials",
    "fin": "final windows",
    "hist": "customer histories",
    "meta": "merge meta",
    "ew": "detector",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=10_000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--no-freeze", action="store_true", help="Python's generations alone (no per-batch freeze)")
    ap.add_argument("--replay", action="store_true", help="the events at their simulated times: a catch-up")
    ap.add_argument("--events", type=int, default=300_000, help="with --replay")
    args = ap.parse_args()
    if args.replay:
        arrivals = list(arrivals_from_events(events(args.events), args.partitions))
    else:
        n = int(args.rate * args.seconds)
        arrivals = list(arrivals_from_events(retime(events(n), args.rate), args.partitions))
    topics = {f: f"cc.{f}" for f in FAMILIES}
    engine = KpiEngine(EngineParams(), topics)
    settings = Settings()
    merger = WindowMerger(MergeParams.from_settings(settings), expected_sources(topics, args.partitions))
    detector = EarlyWarningDetector.from_settings(settings)
    thresholds, variant = tuple(settings.sl_thresholds_s), settings.sl_default_variant
    merge_written: dict[str, int] = dict.fromkeys(MERGE_KINDS, 0)
    merge_entries: dict[str, int] = dict.fromkeys(MERGE_KINDS, 0)
    offsets: dict[tuple[str, int], int] = {}
    written: dict[str, int] = dict.fromkeys(KINDS, 0)
    entries: dict[str, int] = dict.fromkeys(KINDS, 0)
    pauses: list[float] = []
    started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    tune_gc(Settings())
    gc.callbacks.append(on_gc)
    processing = persisting = merging = 0.0
    for i in range(0, len(arrivals), args.batch):
        t0 = time.process_time()
        for a in arrivals[i : i + args.batch]:
            topic = topics[a.family]
            offsets[(topic, a.partition)] = off = offsets.get((topic, a.partition), -1) + 1
            engine.record(topic, a.partition, off, [a.event])
        t1 = time.process_time()
        engine.settle()
        drained = engine.drain()
        for group in drained.groups():
            for (_, key), value in group.items():
                kind = key.split("|")[2]
                written[kind] += len(orjson.dumps(key)) + (len(orjson.dumps(value)) if value is not None else 0)
                entries[kind] += 1
        if not args.no_freeze:  # as the worker does after each batch (streams.app.BatchGc)
            gc.collect(1)
            gc.freeze()
        t2 = time.process_time()
        for msg in drained.messages:  # stage 2, as the worker's merge batch
            merger.on_message(msg)
        records = [final_record(fw, thresholds, variant) for fw in merger.finalize()]
        detector.observe(records)
        detector.drain_staffing()
        if merger.s.next_window is not None:
            merger.prune_history(merger.s.next_window)
        t3 = time.process_time()
        for key, value in {**merger.drain_state(), **detector.drain_state()}.items():
            kind = key.split("|")[0].split("-")[0]
            merge_written[kind] += len(orjson.dumps(key)) + (len(orjson.dumps(value)) if value is not None else 0)
            merge_entries[kind] += 1
        t4 = time.process_time()
        processing += t1 - t0
        persisting += t2 - t1
        merging += t4 - t3
    gc.callbacks.remove(on_gc)
    total = sum(written.values())
    when = "at their simulated times" if args.replay else f"at {args.rate:.0f}/s of event time"
    print(f"{len(arrivals)} events {when}, batches of {args.batch}")
    print(f"CPU: processing {processing:.2f} s, persisting {persisting:.2f} s (stage 2's state: {merging:.2f} s)")
    print("stage 1")
    for kind, name in KINDS.items():
        print(f"  {name:18} {entries[kind]:>8} entries {written[kind] / 1e6:>9.1f} MB")
    per_event = total / len(arrivals)
    print(f"  {'total':18} {sum(entries.values()):>8} entries {total / 1e6:>9.1f} MB ({per_event:.0f} B/event)")
    print("stage 2")
    for kind, name in MERGE_KINDS.items():
        print(f"  {name:18} {merge_entries[kind]:>8} entries {merge_written[kind] / 1e6:>9.1f} MB")
    merge_total = sum(merge_written.values())
    print(
        f"  {'total':18} {sum(merge_entries.values()):>8} entries {merge_total / 1e6:>9.1f} MB"
        f" ({merge_total / len(arrivals):.0f} B/event)"
    )
    pauses.sort()
    print(f"garbage collections: {len(pauses)}, longest {1000 * pauses[-1]:.0f} ms" if pauses else "no collections")


if __name__ == "__main__":
    main()
