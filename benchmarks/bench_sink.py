"""ClickHouse sink insert throughput: rows per second through ``ClickHouseSink.write`` (row
building with pseudonymisation + batched insert), on embedded chdb and on the local
clickhouse-server (Debian's 18.16, started for the run). No Kafka: this measures the sink's own
cost; the end-to-end path is in tests/test_clickhouse_sink.py.

    .venv/bin/python benchmarks/bench_sink.py [--events 200000] [--batch 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callpulse.config import Settings
from callpulse.simulator import SimConfig, simulate
from schemas.pii import Pseudonymizer
from sinks.clickhouse import ClickHouseSink
from sinks.rows import Origin, RowBuilder
from tests.services import ClickHouseServer


def events(n: int) -> list:
    out: list = []
    day = 0
    while len(out) < n:
        start = datetime(2026, 11, 2, tzinfo=UTC) + timedelta(days=day)
        out += [
            (f, e) for f, e in simulate(SimConfig(start=start, duration=timedelta(days=1), seed=day)) if f == "calls"
        ]
        day += 1
    return out[:n]


async def run(settings: Settings, items: list, batch: int) -> tuple[float, float]:
    sink = ClickHouseSink(settings)
    await sink.start()
    rows = RowBuilder(Pseudonymizer("bench"))
    table, columns = rows.event_table("calls")
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    built = [rows.event_row("calls", e, Origin(0, i, now)) for i, (_, e) in enumerate(items)]
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(built), batch):
        await sink.write(table, columns, built[i : i + batch], [(0, i, i + batch - 1)])
    t_insert = time.perf_counter() - t0
    await sink.close()
    return len(items) / t_build, len(items) / t_insert


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=50_000)
    args = ap.parse_args()
    items = events(args.events)
    print(f"{len(items)} call events, inserts of {args.batch} rows")
    base = Path(tempfile.mkdtemp(prefix="callpulse-bench-sink-"))
    chdb = Settings(data_dir=base / "var", clickhouse_database="bench", sink_batch_rows=args.batch)
    build, insert = asyncio.run(run(chdb, items, args.batch))
    print(f"row building (validation done, pseudonymisation): {build:,.0f} rows/s")
    print(f"chdb 26.x insert:                 {insert:,.0f} rows/s")
    server = ClickHouseServer(base / "server").start()
    try:
        native = Settings(clickhouse_dsn=server.dsn, clickhouse_database="bench", sink_batch_rows=args.batch)
        _, insert = asyncio.run(run(native, items, args.batch))
        print(f"clickhouse-server 18.16 insert:   {insert:,.0f} rows/s (native protocol)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
