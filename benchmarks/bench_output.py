"""The worker's output path: CPU per record written to Kafka, ``send`` per record vs ``RecordBatches``.

    python benchmarks/bench_output.py [--records 50000] [--runs 3]

The worker writes about one record per input event of the benchmark's center (changelog
entries of both stages, partial windows, KPI records: 97,344 per 100,000 events). Until
2026-11-29 each went through the producer's ``send`` (a future, a metadata wait and a
partitioner call per record, under faust's own wrapper); ``streams.kafka.RecordBatches`` appends
them to one aiokafka batch per topic partition instead. Here both write the same records to the
real broker (Tansu, embedded) from one process, flushing every 5,000 records as the worker does
per batch, in the two shapes the worker writes: changelog entries (partition given, ~300 bytes)
and KPI records (keyed, Kafka's default partitioner, ~2 KB). Printed: this process's CPU per
record (``time.process_time``), the best of ``--runs``. Faust's wrapper around ``send``, which
the worker also paid, is not included: the gain in the worker is at least this.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from callpulse.embedded import EmbeddedBroker  # noqa: E402
from streams.kafka import RecordBatches  # noqa: E402

FLUSH_EVERY = 5_000
Record = tuple[bytes, bytes, int | None]  # key, value, partition (None: by key)


def shapes(n: int) -> dict[str, list[Record]]:
    return {
        "changelog entry (partition given, 300 B)": [
            (b'"cc.calls|%d|fact|c-%d"' % (i % 4, i), b"x" * 300, i % 4) for i in range(n)
        ],
        "KPI record (keyed, 2 KB)": [
            (b"60|%d|queue|q%d" % (1_700_000_000 + 60 * i, i % 7), b"y" * 2000, None) for i in range(n)
        ],
    }


async def timed(
    records: list[Record], write: Callable[[Record], Awaitable[None]], flush: Callable[[], Awaitable[None]]
) -> float:
    """CPU microseconds per record, flushing every ``FLUSH_EVERY`` records."""
    c0 = time.process_time()
    for i in range(0, len(records), FLUSH_EVERY):
        for r in records[i : i + FLUSH_EVERY]:
            await write(r)
        await flush()
    return 1e6 * (time.process_time() - c0) / len(records)


async def run(bootstrap: str, n: int, runs: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("bench-send", 4, 1), NewTopic("bench-batches", 4, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=16 << 20)
    await producer.start()
    try:
        for topic in ("bench-send", "bench-batches"):
            await producer.partitions_for(topic)
        print(f"{'records':44} {'send us/record':>15} {'RecordBatches us/record':>24}")
        for label, records in shapes(n).items():
            best_send = best_batches = float("inf")
            for _ in range(runs):

                async def send(r: Record) -> None:
                    await producer.send("bench-send", r[1], key=r[0], partition=r[2])

                best_send = min(best_send, await timed(records, send, producer.flush))
                out = RecordBatches(producer)
                best_batches = min(
                    best_batches, await timed(records, lambda r, o=out: o.add("bench-batches", *r), out.flush)
                )
            print(f"{label:44} {best_send:>15.1f} {best_batches:>24.1f}")
    finally:
        await producer.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(f"{args.records} records per shape, best of {args.runs}, CPU of this process (embedded Tansu broker)")
    with EmbeddedBroker() as broker:
        asyncio.run(run(broker.bootstrap, args.records, args.runs))


if __name__ == "__main__":
    main()
