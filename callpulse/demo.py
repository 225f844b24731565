"""``callpulse demo``: embedded broker, worker and simulator in one command.

This first version runs the embedded broker, creates the topics, replays a simulated period
through a worker and prints the final KPI windows per queue as they are emitted. The live
terminal view, embedded ClickHouse and the metrics view arrive with their issues.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from callpulse.config import Settings


def run_demo(settings: Settings, duration: float | None) -> int:
    from aiokafka import AIOKafkaConsumer

    from callpulse.embedded import EmbeddedBroker
    from callpulse.simulator import SimConfig, simulate
    from schemas.records import KpiRecord
    from streams.kafka import EventProducer, client_kwargs, ensure_topics

    broker = None
    if not settings.kafka_bootstrap:
        broker = EmbeddedBroker(settings.embedded_broker_port).start()
        print(f"embedded broker: {broker.bootstrap}")
    env = {**os.environ, "CALLPULSE_KAFKA_BOOTSTRAP": settings.bootstrap(), "CALLPULSE_IDLE_TIMEOUT_S": "5"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "callpulse", "worker", "--loglevel", "warning"], env=env, start_new_session=True
    )
    deadline = time.monotonic() + (duration or 10**9)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
    events = simulate(SimConfig(start=start, duration=timedelta(hours=6)))

    async def run() -> None:
        await ensure_topics(settings)
        async with EventProducer(settings) as producer:
            await producer.send_events(events, envelope=100)
            await producer.send_watermarks((start + timedelta(hours=6)).timestamp() + 180)
        consumer = AIOKafkaConsumer(settings.topics.kpis, **client_kwargs(settings), auto_offset_reset="earliest")
        await consumer.start()
        try:
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for r in records:
                        k = KpiRecord.model_validate_json(r.value)
                        if k.dimension == "queue" and k.window_size_s == 900:
                            sl = "-" if k.service_level is None else f"{100 * k.service_level:5.1f}%"
                            print(
                                f"{k.window_start:%H:%M} {k.dimension_value:10} offered {k.offered:4d} "
                                f"SL {sl} ASA {k.asa_seconds or 0:6.1f}s abandoned {k.abandoned}"
                            )
        finally:
            await consumer.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        if broker:
            broker.stop()
    return 0
