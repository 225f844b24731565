"""Naive faust-streaming: one agent per topic, every event updates a windowed Table
(1-minute tumbling, changelog-backed), the style of faust's own examples.

    python benchmarks/peers/naive_faust.py BOOTSTRAP TOTAL TOPIC...
"""

from __future__ import annotations

import os
import sys

import faust
import orjson
from common import Progress, window_key

bootstrap, total, topics = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
sys.argv = [sys.argv[0], "worker", "-l", "warn"]
app = faust.App(
    "peer-naive-faust",
    broker=f"kafka://{bootstrap}",
    store="memory://",
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    topic_partitions=4,
    autodiscover=False,
)
offered = app.Table("offered", default=int).tumbling(60, expires=7200)
abandoned = app.Table("abandoned", default=int).tumbling(60, expires=7200)
waits = app.Table("wait_sum", default=float).tumbling(60, expires=7200)
progress = Progress(total)


def finish() -> None:
    progress.report()
    os._exit(0)


def calls_agent(topic: faust.TopicT):  # type: ignore[no-untyped-def]
    async def agent(stream: faust.StreamT) -> None:
        async for raw in stream:
            event = orjson.loads(raw)
            queue, _ = window_key(event)
            kind = event["kind"]
            if kind == "offered":
                offered[queue] += 1
            elif kind in ("answered", "abandoned"):
                waits[queue] += event.get("wait_seconds") or 0.0
                if kind == "abandoned":
                    abandoned[queue] += 1
            if progress.add():
                finish()

    return agent


def other_agent(topic: faust.TopicT):  # type: ignore[no-untyped-def]
    async def agent(stream: faust.StreamT) -> None:
        async for raw in stream:
            orjson.loads(raw)
            if progress.add():
                finish()

    return agent


for i, name in enumerate(topics):
    t = app.topic(name, key_serializer="raw", value_serializer="raw")
    app.agent(t, name=f"peer.agent{i}")((calls_agent if i == 0 else other_agent)(t))

if __name__ == "__main__":
    app.main()
