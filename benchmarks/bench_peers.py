"""callpulse side by side with its peers, on the same broker and the same events.

    python benchmarks/bench_peers.py [--events 200000] [--runs 3] [--partitions 4]

One embedded broker (Tansu) per run holds the seeded event mix of ``bench_kpi_engine`` (calls,
tickets, surveys, agent states of a large center) three times: one event per Kafka record and in
envelopes of 100 for callpulse, each ended by a final watermark (as ``callpulse produce`` ends a
replay), and one event per record for the peers. Then, one after another, each contender
consumes it from the start in its own consumer group, in its own process:

* callpulse worker, single records and envelopes: decode, validate, dedup, every KPI, windows,
  changelog, warnings, with the ClickHouse sink (chdb) running beside it; measured until the last
  final KPI record is out (stage 1 alone is also printed);
* naive faust: an agent per topic updating a windowed Table per event;
* Quix Streams 3.28: dataframe, group_by queue, tumbling window agg;
* raw aiokafka + orjson + dicts: the Python ceiling.

The peers compute one small aggregation (offered, abandoned, mean wait per queue and minute);
callpulse computes everything in docs/kpis.md. Printed: events/s (median of the runs, first to
last event), CPU seconds and peak RSS of the contender's process, and callpulse / peer ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_kpi_engine import (  # noqa: E402
    consuming_since,
    cpu_s,
    events,
    follow_worker,
    peak_rss_mib,
    produce_backlog,
    scrape,
    uncommitted,
    worker_env,
)

from callpulse.config import Settings, Topics  # noqa: E402
from callpulse.embedded import EmbeddedBroker, free_port  # noqa: E402
from streams.kafka import EventProducer, ensure_topics  # noqa: E402
from tests.services import WorkerProcess  # noqa: E402

PEERS = REPO / "benchmarks" / "peers"
ENVELOPED = Topics(calls="env.calls", tickets="env.tickets", surveys="env.surveys", agents="env.agents")
FOR_PEERS = Topics(calls="peer.calls", tickets="peer.tickets", surveys="peer.surveys", agents="peer.agents")


def run_callpulse(broker: EmbeddedBroker, topics: Topics, total: int, partitions: int, logs: Path, tag: str) -> dict:
    port, sink_port = free_port(), free_port()
    names = {**topics.model_dump(), **{k: f"{tag}.{k}" for k in ("kpis", "warnings", "staffing", "dlq", "partials")}}
    env = worker_env(
        broker.bootstrap,
        f"bench-{tag}",
        partitions,
        port,
        CALLPULSE_SINK_METRICS_PORT=str(sink_port),
        CALLPULSE_DATA_DIR=str(logs / f"var-{tag}"),
        # own output topics per run: the merge stage must not read another run's partials
        **{f"CALLPULSE_TOPICS__{k.upper()}": v for k, v in names.items()},
    )
    worker = WorkerProcess(env, logs / f"worker-{tag}.log").start()
    sink = WorkerProcess(env, logs / f"sink-{tag}.log", command="sink").start()
    try:
        result = follow_worker(port, total, consuming_since(worker))
        pid = worker.proc.pid  # type: ignore[union-attr]
        rss, cpu = peak_rss_mib(pid), cpu_s(pid)
    finally:
        worker.stop()
        sink.stop()
    # the comparable figure: until every final KPI record is out (stage 1 alone is faster)
    return {
        **result,
        "stage1_per_s": result["events_per_s"],
        "events_per_s": result["end_to_end_per_s"],
        "cpu_s": cpu,
        "peak_rss_mib": rss,
    }


def run_peer(script: str, broker: EmbeddedBroker, topics: Topics, total: int, logs: Path) -> dict:
    names = [topics.calls, topics.tickets, topics.surveys, topics.agents]
    cmd = [sys.executable, str(PEERS / script), broker.bootstrap, str(total), *names]
    env = {**os.environ, "PYTHONPATH": str(PEERS), "QUIX_STATE_DIR": str(logs / "quix-state")}
    with open(logs / f"{script}.log", "w") as err:
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, timeout=1800, check=False)
    lines = [ln for ln in out.stdout.decode().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{script} reported nothing; see {logs / (script + '.log')}")
    return json.loads(lines[-1])


def retime(items: list, rate: float) -> list:
    """The same events moved in time so that they arrive at a constant ``rate`` per second of
    event time (the simulated center's day has quiet nights and busy peaks: compressed as a
    whole, 10,000 events/s on average would mean 25,000 at the peaks). Every timestamp goes
    through one monotone map (the n-th event's time to n / rate, linear in between) and every
    duration is the mapped difference, so the events stay consistent (a ticket's ``created_at``
    before its ``ts``, a call's wait within its leg)."""
    xs: list[float] = []  # event times where the running maximum rises, and their new offsets
    ys: list[float] = []
    for i, (_, e) in enumerate(items):
        t = e.ts.timestamp()
        if not xs or t > xs[-1]:
            xs.append(t)
            ys.append(i / rate)
    slope = (ys[-1] - ys[0]) / (xs[-1] - xs[0]) if len(xs) > 1 else 1.0
    t0 = items[0][1].ts

    def offset(t: float) -> float:
        j = bisect.bisect_right(xs, t) - 1
        if j < 0 or j >= len(xs) - 1:
            k = 0 if j < 0 else len(xs) - 1
            return ys[k] + (t - xs[k]) * slope
        return ys[j] + (t - xs[j]) * (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])

    out = []
    for family, e in items:
        ts = e.ts.timestamp()
        at_ts = offset(ts)
        update: dict[str, Any] = {}
        for name, value in e:
            if isinstance(value, datetime):
                update[name] = t0 + timedelta(seconds=offset(value.timestamp()))
            elif name.endswith("_seconds") and value is not None:
                update[name] = max(0.0, at_ts - offset(ts - value))
        out.append((family, e.model_copy(update=update)))
    return out


def latency(
    evs: list, rate: float, seconds: float, partitions: int, logs: Path, timing: str = "live", envelope: int = 50
) -> dict:
    """Event-to-state latency at a fixed offered rate: events are produced paced (envelopes of
    ``envelope``: 50 as ``callpulse produce --speed`` does, 1 one event per record) while the
    worker's accepted-events counter is sampled; the latency of the events produced by wall time
    t is the time until the worker had accepted that many. Gauges refresh once a second on top
    of this (live values) or when a window closes (windowed KPIs: window length + grace later by
    design).

    ``timing``: ``live`` runs event time at wall-clock speed, as in production, for a center
    that offers ``rate`` events per second all along (the simulated center's events retimed);
    ``replay`` plays the simulated center's own hours within ``seconds`` (its nights and peaks
    compressed alike, and every minute window of those hours closing within the run).

    Also returned: the worker's CPU while the events were produced, as a share of one core (what
    headroom the rate leaves), and the latency drift (median of the last quarter of the run
    minus the first's): about 0 for a worker that keeps up, growing with the run for one that
    does not."""
    import threading

    items = evs[: int(rate * seconds)]
    span = items[-1][1].ts.timestamp() - items[0][1].ts.timestamp()
    speed = span / seconds
    if timing == "live":
        items, speed = retime(items, rate), 1.0
    stamps = [e.ts.timestamp() for _, e in items]  # after retiming
    produced: list[tuple[float, int]] = []
    accepted: list[tuple[float, float]] = []
    with EmbeddedBroker(log_path=logs / "tansu-latency.log") as broker:
        s = Settings(kafka_bootstrap=broker.bootstrap, partitions=partitions, app_id="bench-latency")
        asyncio.run(ensure_topics(s))
        port = free_port()
        env = worker_env(broker.bootstrap, s.app_id, partitions, port)
        worker = WorkerProcess(env, logs / "worker-latency.log").start()
        try:
            worker.wait_ready()
            time.sleep(2)

            async def tick(now: float) -> bool:
                produced.append((time.perf_counter(), bisect.bisect_right(stamps, now)))
                await asyncio.sleep(0.02)  # pace the producer's loop (it would spin a core)
                return True

            async def produce() -> None:
                async with EventProducer(s) as p:
                    await p.replay(items, speed, envelope=envelope, on_tick=tick)

            done = threading.Event()
            thread = threading.Thread(target=lambda: (asyncio.run(produce()), done.set()))
            pid = worker.proc.pid  # type: ignore[union-attr]
            cpu0, wall0 = cpu_s(pid), time.perf_counter()
            thread.start()
            deadline = time.monotonic() + seconds * 4 + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    accepted.append((time.perf_counter(), scrape(port)["accepted"]))
                if done.is_set() and accepted and accepted[-1][1] >= len(items) * 0.999:
                    break
                time.sleep(0.05)
            thread.join()
            busy = (cpu_s(pid) - cpu0) / (time.perf_counter() - wall0)
            time.sleep(6.0)  # two of faust's commit intervals (2.8 s) after the last event was accepted
            left = uncommitted(s)
        finally:
            worker.stop()
    lat = []
    j = 0
    for wall, n in produced:
        while j < len(accepted) and (accepted[j][0] < wall or accepted[j][1] < n * 0.999):
            j += 1
        if j == len(accepted):
            break
        lat.append(accepted[j][0] - wall)
    series = [[round(wall - produced[0][0], 3), round(x, 3)] for (wall, _), x in zip(produced, lat, strict=False)]
    name = f"latency-{rate:.0f}-envelope-{envelope}"
    run = len(list(logs.glob(f"{name}-*.json"))) + 1
    (logs / f"{name}-{run}.json").write_text(json.dumps(series))  # [seconds into the run, latency s]
    # in production order: a worker that keeps up has the same latency at the end as at the
    # start; one that falls behind has a latency growing with the run (drift > 0)
    quarter = max(1, len(lat) // 4)
    drift = statistics.median(lat[-quarter:]) - statistics.median(lat[:quarter]) if lat else None
    lat.sort()
    return {
        "worker_busy": busy,
        "drift_s": drift,
        "rate": len(items) / (produced[-1][0] - produced[0][0]) if len(produced) > 1 else None,
        "p50_s": lat[len(lat) // 2] if lat else None,
        "p99_s": lat[int(len(lat) * 0.99)] if lat else None,
        "max_s": lat[-1] if lat else None,
        "uncommitted": left,
    }


def one_run(evs: list, partitions: int, logs: Path, only: set[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    with EmbeddedBroker(log_path=logs / "tansu.log") as broker:
        single = Settings(kafka_bootstrap=broker.bootstrap, partitions=partitions)
        enveloped = Settings(kafka_bootstrap=broker.bootstrap, partitions=partitions, topics=ENVELOPED)

        for_peers = Settings(kafka_bootstrap=broker.bootstrap, partitions=partitions, topics=FOR_PEERS)
        produce_backlog(single, evs, 1)
        produce_backlog(enveloped, evs, 100)
        produce_backlog(for_peers, evs, 1, watermark=False)  # the same records, without the final watermark
        total = len(evs)
        one = single.topics

        def peer(script: str) -> Any:
            return lambda: run_peer(script, broker, FOR_PEERS, total, logs)

        contenders: list[tuple[str, Any]] = [
            ("callpulse, envelopes of 100", lambda: run_callpulse(broker, ENVELOPED, total, partitions, logs, "env")),
            ("callpulse, one event per record", lambda: run_callpulse(broker, one, total, partitions, logs, "one")),
            ("quix streams 3.28", peer("quix.py")),
            ("naive faust (windowed table per event)", peer("naive_faust.py")),
            ("raw aiokafka + orjson (ceiling)", peer("raw_aiokafka.py")),
        ]
        for name, run in contenders:
            if only and not any(o in name for o in only):
                continue
            print(f"  {name} ...", file=sys.stderr, flush=True)
            out[name] = run()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--only", default="", help="comma-separated substrings of contender names")
    ap.add_argument(
        "--latency-rates",
        default="1000,10000,30000",
        help="events/s offered in the latency runs, comma-separated (empty: skip): a quiet center, the throughput "
        "issue's 10,000, and the KPI engine issue's 30,000 per worker process",
    )
    ap.add_argument("--latency-seconds", type=float, default=30)
    ap.add_argument(
        "--latency-envelope",
        type=int,
        default=50,
        help="events per record in the latency runs; 1: single records, which this benchmark's Python producer "
        "offers at about 25,000/s at most, its pacing then seconds apart: the latency is the producer's",
    )
    ap.add_argument("--latency-runs", type=int, default=3, help="runs per latency rate (median and each run printed)")
    ap.add_argument(
        "--latency-time",
        choices=["live", "replay"],
        default="live",
        help="live: event time at wall-clock speed (production); replay: the simulated hours compressed into the run",
    )
    args = ap.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="callpulse-peers-"))
    evs = events(args.events)
    print(f"{len(evs)} simulated events; logs in {logs}", file=sys.stderr)
    only = {o for o in args.only.split(",") if o}
    runs = []
    for r in range(args.runs):
        print(f"run {r + 1}/{args.runs}", file=sys.stderr)
        (logs / f"run{r}").mkdir()
        runs.append(one_run(evs, args.partitions, logs / f"run{r}", only))
    lats: dict[float, list[dict]] = {}  # rate -> one result per run
    asked = [float(r) for r in args.latency_rates.split(",") if r]
    if asked and max(asked) * args.latency_seconds > len(evs):  # enough events for the fastest rate
        evs = events(int(max(asked) * args.latency_seconds))
    for rate in asked:
        for r in range(args.latency_runs):
            print(f"latency at {rate:.0f} events/s offered, run {r + 1}/{args.latency_runs}", file=sys.stderr)
            run = latency(
                evs, rate, args.latency_seconds, args.partitions, logs, args.latency_time, args.latency_envelope
            )
            lats.setdefault(rate, []).append(run)
    names = list(runs[0]) if runs else []
    median = {n: statistics.median(r[n]["events_per_s"] for r in runs) for n in names}
    print(f"\n{'contender':42} {'events/s (median)':>18} {'runs':>24} {'CPU s':>7} {'peak RSS MiB':>13}")
    for n in names:
        rates = "/".join(f"{r[n]['events_per_s']:.0f}" for r in runs)
        cpu = statistics.median(r[n]["cpu_s"] for r in runs)
        rss = max(r[n]["peak_rss_mib"] for r in runs)
        print(f"{n:42} {median[n]:>18,.0f} {rates:>24} {cpu:>7.1f} {rss:>13.0f}")
        if "stage1_per_s" in runs[0][n]:
            s1 = statistics.median(r[n]["stage1_per_s"] for r in runs)
            print(f"{'  (stage 1 alone: decode, validate, KPI state)':42} {s1:>18,.0f}")
    ours = [n for n in names if n.startswith("callpulse")]
    if ours:
        print()
        for o in ours:
            ratios = ", ".join(f"{p.split(' (')[0]} {median[o] / median[p]:.2f}x" for p in names if p not in ours)
            print(f"{o}: {ratios}")
    if lats:
        print()
    for rate, mine in lats.items():
        measured = [lat for lat in mine if lat["p50_s"] is not None]
        for lat in mine:
            p50, p99 = lat["p50_s"], lat["p99_s"]
            print(
                f"event-to-state latency, callpulse worker, {rate:.0f} events/s asked, {lat['rate']:.0f} offered "
                f"(envelopes of {args.latency_envelope}, event time {args.latency_time}): "
                + (
                    f"p50 {p50:.2f} s, p99 {p99:.2f} s, max {lat['max_s']:.2f} s, drift {lat['drift_s']:+.2f} s; "
                    f"worker busy {lat['worker_busy']:.0%} of a core; "
                    f"{lat['uncommitted']:,} input records uncommitted 6 s after the last was accepted"
                    if p50 is not None
                    else "n/a"
                )
            )
        if measured:
            print(
                f"  median of {len(measured)} runs at {rate:.0f} events/s: "
                f"p50 {statistics.median(lat['p50_s'] for lat in measured):.2f} s, "
                f"p99 {statistics.median(lat['p99_s'] for lat in measured):.2f} s "
                f"(worst p99 {max(lat['p99_s'] for lat in measured):.2f} s)"
            )


if __name__ == "__main__":
    main()
