"""Ingest at the edge: read a file (or follow a live one), convert, write the events to a JSONL
file or produce them to Kafka, write every bad line to a reject file (and, when producing, to the
dead-letter topic with its bytes and reason), and account for every line in a summary."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from callpulse.config import Settings
from callpulse.ingest.queue_log import Ignored, Rejected
from schemas.events import EventBase
from schemas.records import DeadLetter, DeadLetterReason

# ingest reject reasons -> the dead-letter reason codes every consumer of cc.dlq knows
DLQ_REASON = {
    "missing_field": DeadLetterReason.missing_field,
    "out_of_range": DeadLetterReason.out_of_range,
    "not_a_number": DeadLetterReason.wrong_type,
    "unknown_event": DeadLetterReason.invalid_enum,
}


@dataclass
class Summary:
    lines: int = 0
    events: int = 0
    ignored: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines_read": self.lines,
            "events": self.events,
            "ignored_by_event": dict(sorted(self.ignored.items())),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
        }


def read_lines(path: Path, summary: Summary, on_progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """A file's lines, counted; undecodable bytes become U+FFFD (the line is then rejected or
    mapped with the replacement character, never lost)."""
    with path.open("rb") as f:
        for raw in f:
            summary.lines += 1
            if on_progress:
                on_progress(len(raw))
            yield raw.decode("utf-8", errors="replace")


def follow(path: Path, stop: threading.Event, poll_s: float = 0.5) -> Iterator[str]:
    """Lines of a live file as they are written, like ``tail -F``: survives rotation (the path
    now names another file) and truncation; a partial last line waits for its newline."""
    f = None
    inode = None
    buffer = b""
    while not stop.is_set():
        if f is None:
            try:
                f = path.open("rb")
                inode = os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                time.sleep(poll_s)
                continue
        chunk = f.readline()
        if chunk:
            buffer += chunk
            if buffer.endswith(b"\n"):
                yield buffer.decode("utf-8", errors="replace")
                buffer = b""
            continue
        try:
            st = path.stat()
        except FileNotFoundError:
            st = None
        if st is None or st.st_ino != inode:  # rotated: finish the old file, then the new one
            rest = f.read()
            if rest:
                buffer += rest
                continue
            f.close()
            f = None
            continue
        if st.st_size < f.tell():  # truncated in place
            f.seek(0)
            continue
        time.sleep(poll_s)
    if f is not None:
        f.close()


class EventSink:
    """Where converted events go: a JSONL file, or Kafka (with dead letters for rejects)."""

    def __init__(self, settings: Settings, out: Path | None, rejects: Path, source: str, batch: int = 1000) -> None:
        """``batch``: events buffered before they are written or produced (1 when following a
        live file, so nothing waits for the next line)."""
        self.settings = settings
        self.batch_size = batch
        self.out = out.open("wb") if out else None
        self.rejects = rejects.open("ab")
        self.source = source
        self.batch: list[tuple[str, EventBase]] = []
        self.letters: list[tuple[Rejected, DeadLetter]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: Any = None

    def __enter__(self) -> EventSink:
        if self.out is None:
            from streams.kafka import EventProducer, ensure_topics

            async def start() -> EventProducer:  # aiokafka objects are built inside their loop
                await ensure_topics(self.settings)
                return await EventProducer(self.settings).__aenter__()

            self._loop = asyncio.new_event_loop()
            self._producer = self._loop.run_until_complete(start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
        if self._producer is not None and self._loop is not None:
            self._loop.run_until_complete(self._producer.__aexit__(None, None, None))
            self._loop.close()
        if self.out:
            self.out.close()
        self.rejects.close()

    def event(self, family: str, event: EventBase) -> None:
        self.batch.append((family, event))
        if len(self.batch) >= self.batch_size:
            self.flush()

    def reject(self, r: Rejected) -> None:
        line = {"source": self.source, "line": r.number, "reason": r.reason, "error": r.error, "raw": r.raw}
        self.rejects.write(orjson.dumps(line) + b"\n")
        if self.batch_size == 1:
            self.rejects.flush()
        if self._producer is not None:
            letter = DeadLetter(
                source_topic=f"ingest:{self.source}",
                partition=0,
                offset=r.number,
                reason=DLQ_REASON.get(r.reason, DeadLetterReason.invalid_value),
                error=f"{r.reason}: {r.error}",
                dead_lettered_at=datetime.now(UTC),
            )
            self.letters.append((r, letter))
            if self.batch_size == 1:
                self.flush()

    def flush(self) -> None:
        if self.out is not None:
            for family, e in self.batch:
                self.out.write(b'{"topic":"' + family.encode() + b'","event":' + e.model_dump_json().encode() + b"}\n")
        elif self._loop is not None:
            self._loop.run_until_complete(self._send())
        self.batch, self.letters = [], []
        self.rejects.flush()

    async def _send(self) -> None:
        p = self._producer
        if self.batch:
            await p.send_events(self.batch, envelope=50)
        for r, letter in self.letters:
            await p.producer.send_and_wait(self.settings.topics.dlq, r.raw.encode(), key=None, headers=letter.headers())


def ingest(items: Iterable[tuple[str, EventBase] | Rejected | Ignored], sink: EventSink, summary: Summary) -> Summary:
    """Drain converted lines into the sink, counting everything."""
    for item in items:
        if isinstance(item, Rejected):
            summary.rejected[item.reason] += 1
            sink.reject(item)
        elif isinstance(item, Ignored):
            summary.ignored[item.event] += 1
        else:
            sink.event(*item)
            summary.events += 1
    sink.flush()
    return summary
