"""Throughput of the KPI engine: events/s through one worker process on the real broker.

    python benchmarks/bench_kpi_engine.py [--events 200000] [--partitions 4]

For each record form (one event per Kafka record; envelopes of 100 events) it starts a fresh
embedded broker, produces the simulated events (a mix of calls, tickets, surveys, agent
states), then starts one ``callpulse worker`` on the backlog and measures, from the worker's
own Prometheus counters, events accepted per second from its first to its last processed
record (stage 1) and end to end (until the last final KPI record is out), plus the worker's
peak RSS and the input records its consumer group had not committed by then (what a restarted
worker would read again; Kafka's consumer lag). It also times the pure engine in-process (no Kafka) for
reference. Figures are printed as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
import urllib.request
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402

from callpulse.config import Settings  # noqa: E402
from callpulse.embedded import EmbeddedBroker, free_port  # noqa: E402
from callpulse.simulator import DEFAULT_QUEUES, QueueSpec, SimConfig, simulate  # noqa: E402
from streams.app import tune_gc  # noqa: E402
from streams.compiled import PURE_ENV, engine_mode  # noqa: E402
from streams.consumer import fetched_ends  # noqa: E402
from streams.kafka import EventProducer, client_kwargs, ensure_topics  # noqa: E402
from streams.merge import MergeParams  # noqa: E402
from streams.pipeline import LocalPipeline  # noqa: E402
from streams.reference import arrivals_from_events  # noqa: E402
from streams.sources import EngineParams  # noqa: E402
from tests.services import WorkerProcess  # noqa: E402

# A large center (about 2,000 calls an hour at the peak): per-window work is then amortised over
# realistic volumes, as in production; a tiny center replayed fast measures windows, not events.
LARGE_CENTER = tuple(
    QueueSpec(q.name, q.channel, q.business_type, q.rate_per_hour * 8, q.aht_s) for q in DEFAULT_QUEUES
)


def events(n: int, scale: int = 1, from_hour: float = 0.0) -> list:
    """``n`` events of the large center, or of one ``scale`` times larger (traffic, agents,
    tickets and customers), simulated a period at a time from Monday 00:00 UTC.

    ``from_hour`` starts at that hour of Monday instead, each period simulated from half an hour
    before it and the events before it left out: a center already working (its agents logged
    in, contacts in progress), not its log-in storm. The default keeps the figures of earlier
    runs comparable."""
    out: list = []
    period = timedelta(hours=24) / scale
    warmup = timedelta(minutes=30) if from_hour else timedelta(0)
    i = 0
    while len(out) < n:
        start = datetime(2026, 11, 2, tzinfo=UTC) + timedelta(hours=from_hour) + i * period
        batch = simulate(
            SimConfig(
                start=start - warmup,
                duration=period + warmup,
                seed=100 + i,
                queues=tuple(
                    QueueSpec(q.name, q.channel, q.business_type, q.rate_per_hour * scale, q.aht_s)
                    for q in LARGE_CENTER
                ),
                agents=400 * scale,
                ticket_rate_per_hour=600 * scale,
                customers=200_000 * scale,
            )
        )
        begin, end = start.timestamp(), (start + period).timestamp()
        out.extend(fe for fe in batch if begin <= fe[1].ts.timestamp() < end)
        i += 1
    return out[:n]


SCRAPED = (
    "callpulse_input_records_total",
    "callpulse_events_total",
    "callpulse_kpi_records_total",
    "callpulse_gc_pause_seconds_sum",
    "callpulse_batch_duration_seconds_sum",
    "callpulse_batch_duration_seconds_count",
)
STAGES = ("ingest", "merge")


def scrape(port: int) -> dict[str, float]:
    """The worker's progress counters. Only these are asked for (``name[]``, prometheus_client's
    filter): the benchmarks scrape every 50 ms, and rendering every gauge each time took about a
    twelfth of the worker's CPU, a load no Prometheus puts on it."""
    query = "&".join(f"name[]={name}" for name in SCRAPED)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics?{query}", timeout=2).read().decode()
    out: dict[str, float] = {}
    for name in SCRAPED:
        total = sum(float(v) for v in re.findall(rf"^{name}{{[^}}]*}} ([0-9.e+-]+)$", text, re.M))
        out[name] = total
    out["accepted"] = sum(
        float(v) for v in re.findall(r'^callpulse_events_total{[^}]*outcome="accepted"[^}]*} ([0-9.e+-]+)$', text, re.M)
    )
    for stage in STAGES:  # seconds the worker spent in each stage's batches, and how many batches
        for part, suffix in (("s", "sum"), ("batches", "count")):
            pattern = rf'^callpulse_batch_duration_seconds_{suffix}{{stage="{stage}"}} ([0-9.e+-]+)$'
            out[f"{stage}_{part}"] = sum(float(v) for v in re.findall(pattern, text, re.M))
    return out


def worker_env(bootstrap: str, app_id: str, partitions: int, port: int, **extra: str) -> dict[str, str]:
    """The environment of a benchmarked worker (batches of ``CALLPULSE_BATCH_MAX``, 5000 unless
    set; ``extra`` overrides)."""
    return {
        "CALLPULSE_KAFKA_BOOTSTRAP": bootstrap,
        "CALLPULSE_PARTITIONS": str(partitions),
        "CALLPULSE_APP_ID": app_id,
        "CALLPULSE_METRICS_PORT": str(port),
        "CALLPULSE_BATCH_MAX": os.environ.get("CALLPULSE_BATCH_MAX", "5000"),
        **extra,
    }


def final_watermark(evs: list) -> float:
    """Event time by which every window of ``evs`` is closed (last event + grace + a base window),
    as ``callpulse produce`` ends a replay: the measured run then ends with the data, not with
    the idle heartbeat (which would add its 30 s timeout to the end-to-end time)."""
    s = Settings()
    return max(e.ts.timestamp() for _, e in evs) + s.grace_s + 2 * s.base_window_s


def produce_backlog(settings: Settings, evs: list, envelope: int, watermark: bool = True) -> None:
    """Create the topics and produce the events (``envelope`` events per record), then the final
    watermark on every partition (not for the peers, which know no watermark records)."""

    async def produce() -> None:
        await ensure_topics(settings)
        async with EventProducer(settings) as p:
            await p.send_events(evs, envelope)
            if watermark:
                await p.send_watermarks(final_watermark(evs))

    asyncio.run(produce())


def consuming_since(*workers: WorkerProcess, timeout: float = 120) -> float:
    """When the first of ``workers`` had its partitions (its log says so): the start of a
    catch-up. Returns once every worker has them. (Until 2026-11-27 the clock started at the
    first accepted events, i.e. after the first batch: that overstated the rates when the first
    batch was a large share of the backlog.)"""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(workers):
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers not ready after {timeout}s")
        for i, w in enumerate(workers):
            if i not in seen and w.is_ready():
                seen[i] = time.perf_counter()
        time.sleep(0.02)
    return min(seen.values())


def follow_worker(
    port: int,
    total: int,
    start: float,
    timeout_s: float = 1200,
    quiet_s: float = 15,
    pid: int | None = None,
    cpu_at_start: float | None = None,
) -> dict[str, float]:
    """Watch a worker's counters until it accepted ``total`` events and its final KPI records
    stopped growing for ``quiet_s`` (with ``pid``: with the worker idle for as long, since one
    merge batch of a long catch-up outlasts any quiet period). Two rates, both from ``start``
    (``consuming_since``): stage 1 (until the last event accepted) and end to end (until the
    last final KPI record is out: what a catch-up really takes; stage 2 emits in bursts, hence
    the quiet period). With ``pid`` and ``cpu_at_start`` (its CPU seconds at ``start``), also
    the CPU the worker spent on the catch-up (``catch_up_cpu_s``: from ``start`` to the scrape
    that saw the last record), which the machine's other load moves less than the wall-clock
    rates. Scrapes every 0.1 s: the end of a 100,000-event catch-up is read within a few
    percent."""
    last = last_record = busy_at = None
    final = records = 0.0
    cpu_at_last = cpu_at_start
    cpu_seen: deque[tuple[float, float]] = deque()  # (time, worker CPU seconds) of the last second
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            m = scrape(port)
        except OSError:
            continue
        now = time.perf_counter()
        cpu = cpu_s(pid) if pid is not None else None  # once per scrape, for both uses below
        if m["accepted"] > final:
            final, last = m["accepted"], now
        if m["callpulse_kpi_records_total"] > records:
            records, last_record = m["callpulse_kpi_records_total"], now
            if cpu is not None:
                cpu_at_last = cpu
        if cpu is not None:
            # a merge batch of a long catch-up runs for many seconds before its records are out:
            # quiet means no new record *and* an idle worker (under a fifth of a core)
            cpu_seen.append((now, cpu))
            while now - cpu_seen[0][0] > 1.0:
                cpu_seen.popleft()
            (t0, c0), (t1, c1) = cpu_seen[0], cpu_seen[-1]
            if t1 - t0 >= 0.5 and (c1 - c0) / (t1 - t0) > 0.2:
                busy_at = now
        if final >= total * 0.99 and last is not None and now - max(last, last_record or 0, busy_at or 0) > quiet_s:
            break
    span = (last or start) - start
    e2e = (last_record or start) - start
    out = {
        "events": final,
        "events_per_s": final / span if span > 0 else float("nan"),
        "end_to_end_per_s": final / e2e if e2e > 0 else float("nan"),
        "kpi_records": records,
    }
    if cpu_at_start is not None and cpu_at_last is not None:
        out["catch_up_cpu_s"] = cpu_at_last - cpu_at_start
    return out


def uncommitted(settings: Settings) -> int:
    """Input records the worker's consumer group has not committed: end offsets (exact, from a
    fetch) minus committed offsets."""

    async def run() -> int:
        client = client_kwargs(settings)
        consumer = AIOKafkaConsumer(group_id=settings.app_id, enable_auto_commit=False, **client)
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in settings.topics.inputs().values() for p in range(settings.partitions)]
            ends = await fetched_ends(client, await consumer.end_offsets(tps))
            left = 0
            for tp in tps:
                left += (ends[tp] or 0) - ((await consumer.committed(tp)) or 0)
            return left
        finally:
            await consumer.stop()

    return asyncio.run(run())


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_worker(evs: list, partitions: int, envelope: int, logs: Path) -> dict[str, float]:
    with EmbeddedBroker(log_path=logs / f"tansu-{envelope}.log") as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, partitions=partitions, app_id=f"bench-{envelope}")
        t0 = time.perf_counter()
        produce_backlog(settings, evs, envelope)
        produce_s = time.perf_counter() - t0
        port = free_port()
        env = worker_env(broker.bootstrap, settings.app_id, partitions, port)
        worker = WorkerProcess(env, logs / f"worker-{envelope}.log").start()
        try:
            pid = worker.proc.pid  # type: ignore[union-attr]
            start = consuming_since(worker)
            result = follow_worker(port, len(evs), start, pid=pid, cpu_at_start=cpu_s(pid))
            final = scrape(port)
            rss, cpu = peak_rss_mib(pid), cpu_s(pid)
            left = uncommitted(settings)
        finally:
            worker.stop()
        busy = {f"{stage}_{part}": final[f"{stage}_{part}"] for stage in STAGES for part in ("s", "batches")}
        gc_s = final["callpulse_gc_pause_seconds_sum"]
        return {
            **result,
            **busy,
            "peak_rss_mib": rss,
            "cpu_s": cpu,
            "gc_s": gc_s,
            "produce_s": produce_s,
            "uncommitted": left,
        }


def run_in_process(evs: list, partitions: int) -> dict[str, float]:
    tune_gc(Settings())  # as the worker does
    arrivals = arrivals_from_events(evs, partitions, final_watermark(evs))
    params = EngineParams()
    pipe = LocalPipeline(params, MergeParams.from_settings(Settings()), partitions)
    t0, c0 = time.perf_counter(), time.process_time()
    pipe.feed(arrivals, batch=5000)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    rate = len(evs) / elapsed
    return {
        "events": len(evs),
        "events_per_s": rate,
        "end_to_end_per_s": rate,
        "kpi_records": len(pipe.records),
        "cpu_s": cpu,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--envelopes", default="1,100", help="record forms to run: events per record")
    ap.add_argument("--skip-in-process", action="store_true")
    ap.add_argument(
        "--scale",
        type=int,
        default=1,
        help="a center this many times larger (more events per window: per-window work weighs less)",
    )
    ap.add_argument(
        "--from-hour",
        type=float,
        default=0.0,
        help="start at this hour of Monday, the center already working (0: from midnight, its agents logging in)",
    )
    args = ap.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="callpulse-bench-"))
    evs = events(args.events, args.scale, args.from_hour)
    span_h = (evs[-1][1].ts - evs[0][1].ts).total_seconds() / 3600
    print(
        f"{len(evs)} simulated events (calls, tickets, surveys, agent states) over {span_h:.1f} h of event time "
        f"(center x{args.scale}, from Monday {evs[0][1].ts:%H:%M}); logs in {logs}"
    )
    rows = [] if args.skip_in_process else [("engine in-process (no Kafka)", run_in_process(evs, args.partitions))]
    for envelope in (int(x) for x in args.envelopes.split(",") if x):  # --envelopes '': in process only
        label = "worker, one event per record" if envelope == 1 else f"worker, envelopes of {envelope}"
        rows.append((label, run_worker(evs, args.partitions, envelope, logs)))
    head = f"{'path':36} {'events':>9} {'stage 1 ev/s':>13} {'end-to-end ev/s':>16} {'KPI records':>12}"
    print(
        f"\n{head} {'RSS MiB':>8} {'CPU s':>6} {'us/event':>8} {'ingest s':>8} {'merge s':>7} {'batches':>9}"
        f" {'GC s':>5} {'uncommitted':>11}"
    )
    for label, r in rows:
        rss = f"{r['peak_rss_mib']:.0f}" if "peak_rss_mib" in r else "-"
        cpu = f"{r['cpu_s']:.1f}" if "cpu_s" in r else "-"
        gc_s = f"{r['gc_s']:.2f}" if "gc_s" in r else "-"
        ingest, merge = (f"{r[f'{stage}_s']:.1f}" if f"{stage}_s" in r else "-" for stage in STAGES)
        left = f"{r['uncommitted']:.0f}" if "uncommitted" in r else "-"
        per_event = f"{1e6 * r['catch_up_cpu_s'] / r['events']:.1f}" if "catch_up_cpu_s" in r else "-"
        batches = "/".join(f"{r[f'{stage}_batches']:.0f}" for stage in STAGES) if "ingest_batches" in r else "-"
        print(
            f"{label:36} {r['events']:>9.0f} {r['events_per_s']:>13.0f} {r['end_to_end_per_s']:>16.0f} "
            f"{r['kpi_records']:>12.0f} {rss:>8} {cpu:>6} {per_event:>8} {ingest:>8} {merge:>7} {batches:>9}"
            f" {gc_s:>5} {left:>11}"
        )
    print(
        "(CPU s: the worker process from its start, start-up and group join included; in process: the feed alone;"
        " us/event: the worker's CPU from having its partitions to its last KPI record, per event;"
        " ingest s / merge s: time in the worker's stage 1 and stage 2 batches, callpulse_batch_duration_seconds;"
        " batches: how many of each (ingest/merge);"
        " GC s: the worker's garbage-collector pauses, callpulse_gc_pause_seconds;"
        " uncommitted: input records its group had not committed at the end, when the worker had been quiet"
        " for 15 s: what a restart would read again)"
    )
    print(f"KPI engine: {engine_mode()} ({PURE_ENV}=1 for the sources)")


if __name__ == "__main__":
    main()
