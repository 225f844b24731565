"""Scale-out: the same backlog through 1 and then 2 worker processes in one consumer group.

    python benchmarks/bench_scaleout.py [--events 100000] [--partitions 4] [--envelope 100]

Kafka spreads the input partitions over the workers (faust co-assigns partition p of every
input topic); the merge stage (one partition) runs in one of them. Measured like
``bench_kpi_engine``: stage 1 (events accepted per second, summed over the workers) and end to
end (from the first worker having its partitions to the last final KPI record out).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_kpi_engine import consuming_since, events, peak_rss_mib, produce_backlog, scrape, worker_env  # noqa: E402

from callpulse.config import Settings  # noqa: E402
from callpulse.embedded import EmbeddedBroker, free_port  # noqa: E402
from tests.services import WorkerProcess  # noqa: E402


def run(evs: list, workers: int, partitions: int, envelope: int, logs: Path) -> dict[str, float]:
    with EmbeddedBroker(log_path=logs / f"tansu-{workers}.log") as broker:
        s = Settings(kafka_bootstrap=broker.bootstrap, partitions=partitions, app_id=f"scale-{workers}")
        produce_backlog(s, evs, envelope)
        ports = [free_port() for _ in range(workers)]
        procs = []
        for i, port in enumerate(ports):
            env = worker_env(broker.bootstrap, s.app_id, partitions, port)
            procs.append(WorkerProcess(env, logs / f"worker-{workers}-{i}.log").start())
        try:
            first = consuming_since(*procs)  # the first member's start; every member joined
            last = last_record = None
            accepted = records = 0.0
            deadline = time.monotonic() + 1200
            while time.monotonic() < deadline:
                time.sleep(0.25)
                try:
                    ms = [scrape(port) for port in ports]
                except OSError:
                    continue
                now = time.perf_counter()
                a = sum(m["accepted"] for m in ms)
                k = sum(m["callpulse_kpi_records_total"] for m in ms)
                if a > accepted:
                    accepted, last = a, now
                if k > records:
                    records, last_record = k, now
                if accepted >= len(evs) * 0.99 and last is not None and now - max(last, last_record or 0) > 15:
                    break
            rss = max(peak_rss_mib(p.proc.pid) for p in procs)  # type: ignore[union-attr]
        finally:
            for p in procs:
                p.stop()
    return {
        "accepted": accepted,
        "stage1_per_s": accepted / (last - first) if last and last > first else float("nan"),
        "end_to_end_per_s": accepted / (last_record - first) if last_record and last_record > first else float("nan"),
        "kpi_records": records,
        "peak_rss_mib": rss,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--envelope", type=int, default=100)
    args = ap.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="callpulse-scaleout-"))
    evs = events(args.events)
    print(f"{len(evs)} events, envelopes of {args.envelope}, {args.partitions} partitions; logs in {logs}")
    rows = [(n, run(evs, n, args.partitions, args.envelope, logs)) for n in (1, 2)]
    print(f"\n{'workers':>8} {'stage 1 ev/s':>13} {'end-to-end ev/s':>16} {'KPI records':>12} {'max RSS MiB':>12}")
    for n, r in rows:
        print(
            f"{n:>8} {r['stage1_per_s']:>13.0f} {r['end_to_end_per_s']:>16.0f} {r['kpi_records']:>12.0f} "
            f"{r['peak_rss_mib']:>12.0f}"
        )


if __name__ == "__main__":
    main()
