"""Quix Streams: the same aggregation with its dataframe API (event-time tumbling window,
grouped by queue through its own repartition topic, final results only; the same 2-minute
grace as callpulse).

    python benchmarks/peers/quix.py BOOTSTRAP TOTAL TOPIC...
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from typing import Any

from common import Progress
from quixstreams import Application
from quixstreams.dataframe.windows import Count, Mean, Sum

bootstrap, total, topics = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
progress = Progress(total)


def event_time(value: Any, headers: Any, timestamp: float, timestamp_type: Any) -> int:
    return int(datetime.fromisoformat(value["ts"]).timestamp() * 1000)


def seen(value: Any) -> None:
    if progress.add():
        progress.report()
        os._exit(0)


app = Application(
    broker_address=bootstrap,
    consumer_group="peer-quix",
    auto_offset_reset="earliest",
    processing_guarantee="at-least-once",
    loglevel="ERROR",
    state_dir=os.environ.get("QUIX_STATE_DIR", "/tmp/peer-quix-state"),
)
for i, name in enumerate(topics):
    topic = app.topic(name, value_deserializer="json", timestamp_extractor=event_time)
    sdf = app.dataframe(topic)
    if i == 0:
        sdf = sdf.group_by("queue")
        sdf = sdf.update(seen)  # counted after the repartition, on the way into the window
        sdf["abandoned"] = sdf.apply(lambda v: 1 if v["kind"] == "abandoned" else 0)
        sdf["wait"] = sdf.apply(lambda v: v.get("wait_seconds") or 0.0)
        sdf = (
            sdf.tumbling_window(timedelta(minutes=1), grace_ms=timedelta(seconds=120))
            .agg(offered=Count(), abandoned=Sum("abandoned"), mean_wait=Mean("wait"))
            .final()
        )
    else:
        sdf = sdf.update(seen)

if __name__ == "__main__":
    app.run()
