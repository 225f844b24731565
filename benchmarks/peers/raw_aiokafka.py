"""The Python ceiling: aiokafka consumer, orjson, plain dict aggregation, no framework.

python benchmarks/peers/raw_aiokafka.py BOOTSTRAP TOTAL TOPIC...
"""

from __future__ import annotations

import asyncio
import sys

import orjson
from aiokafka import AIOKafkaConsumer
from common import Progress, Window, apply, window_key


async def main(bootstrap: str, total: int, topics: list[str]) -> None:
    calls = topics[0]
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id="peer-raw",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        max_partition_fetch_bytes=16 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    windows: dict[tuple[str, int], Window] = {}
    progress = Progress(total)
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            done = False
            for tp, records in batches.items():
                for r in records:
                    event = orjson.loads(r.value)
                    if tp.topic == calls:
                        key = window_key(event)
                        w = windows.get(key)
                        if w is None:
                            w = windows[key] = Window()
                        apply(w, event)
                done = progress.add(len(records)) or done
            if done:
                break
    finally:
        await consumer.stop()
    progress.report(windows=len(windows))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))
