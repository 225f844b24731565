"""Stage 1 container: the sources a worker owns, and how their state maps to table entries.

``KpiEngine`` is pure: the Faust agent (``streams/app.py``) feeds it records, asks it to
``drain`` what a batch produced, and writes that to Kafka in the order the crash-safety
argument in ``streams/sources.py`` needs (``Drained.groups``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import orjson

from schemas.events import EventBase
from streams.sources import SOURCE_TYPES, EngineParams, OpenWindow, Outcome, Source

State = dict[str, Any] | None


@dataclass
class Drained:
    """Everything one batch produced, in the order it must be made durable."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    chunks: dict[tuple[int, str], State] = field(default_factory=dict)  # before the windows naming them
    windows: dict[tuple[int, str], State] = field(default_factory=dict)  # (partition, key) -> value
    facts: dict[tuple[int, str], State] = field(default_factory=dict)
    metas: dict[tuple[int, str], State] = field(default_factory=dict)
    garbage: dict[tuple[int, str], State] = field(default_factory=dict)  # tombstones, once nothing needs them

    def groups(self) -> tuple[dict[tuple[int, str], State], ...]:
        """Table entries in the order they must become durable, each group before the next."""
        return (self.chunks, self.windows, self.facts, self.metas, self.garbage)


#: Bytes of JSON a partials record holds at most (a single larger message goes alone): well under
#: a broker's usual 1 MiB record limit.
PARTIALS_RECORD_BYTES = 512 << 10


def partial_records(
    messages: Iterable[dict[str, Any]], limit: int = PARTIALS_RECORD_BYTES
) -> list[tuple[bytes, bytes]]:
    """The Kafka records (key, value) that carry a batch's messages to stage 2: per source, a
    JSON array of its messages in order, keyed by the source.

    One record per window close made the partials topic about one record per five input events
    of a center like the benchmark's, each paying the producer's, the fetcher's and the merge
    agent's per-record costs; a source's messages of one batch now share a record (or a few).
    A source's messages stay in order; stage 2 never relied on an order across sources."""
    by_source: dict[str, list[bytes]] = {}
    for m in messages:
        by_source.setdefault(m["source"], []).append(orjson.dumps(m))
    out = []
    for source, encoded in by_source.items():
        key = source.encode()
        run: list[bytes] = []
        size = 2
        for b in encoded:
            if run and size + len(b) > limit:
                out.append((key, b"[" + b",".join(run) + b"]"))
                run, size = [], 2
            run.append(b)
            size += len(b) + 1
        out.append((key, b"[" + b",".join(run) + b"]"))
    return out


def messages_of(value: bytes) -> list[dict[str, Any]]:
    """The stage-1 messages of one partials record: a JSON array of them, or one message (the
    form written before 2026-11-28, still read)."""
    decoded = orjson.loads(value)
    return decoded if isinstance(decoded, list) else [decoded]


def state_key(source: Source, kind: str, name: str | int = "") -> str:
    return f"{source.topic}|{source.partition}|{kind}|{name}"


class KpiEngine:
    """The stage-1 sources of one worker, grouped by partition number (a *shard*): faust assigns
    the same partition number of every input topic to the same worker (co-partitioning)."""

    def __init__(self, params: EngineParams, topics: Mapping[str, str]) -> None:
        self.params = params
        self.topics = dict(topics)  # family -> topic
        self.family_of = {t: f for f, t in self.topics.items()}
        self.shards: dict[int, dict[str, Source]] = {}

    def source(self, topic: str, partition: int) -> Source:
        shard = self.shards.get(partition)
        if shard is None:
            # All four sources of a shard exist together: they read each other (survey join).
            shard = self.shards[partition] = {}
            for family, name in self.topics.items():
                shard[family] = SOURCE_TYPES[family](name, partition, self.params, shard)
        return shard[self.family_of[topic]]

    def ensure_shard(self, partition: int, now: float) -> None:
        for topic in self.topics.values():
            src = self.source(topic, partition)
            if src.assigned_at is None:
                src.assigned_at = now

    def sources(self) -> Iterable[Source]:
        for shard in self.shards.values():
            yield from shard.values()

    def record(
        self, topic: str, partition: int, offset: int, events: list[EventBase], now: float | None = None
    ) -> Outcome:
        return self.source(topic, partition).record(offset, events, now)

    def watermark(self, topic: str, partition: int, offset: int, ts: float, now: float | None = None) -> None:
        self.source(topic, partition).watermark(offset, ts, now)

    def tick(self, now: float) -> None:
        """Heartbeat for idle sources; call about once a second."""
        known = [s.st for s in self.sources() if s.st is not None]
        floor = min(known) if known else None
        for src in self.sources():
            src.tick(now, floor)
        self.settle()

    def settle(self) -> None:
        for src in self.sources():
            src.settle()

    def live(self) -> dict[str, dict[str, float]]:
        """Running values (not windowed) summed over this worker's partitions, per dimension
        value: contacts waiting and in progress now, longest current wait, agents per state.
        Each worker exports its share; Prometheus sums across workers (max for the wait)."""
        out: dict[str, dict[str, float]] = {}
        for src in self.sources():
            for key, values in src.live().items():
                cell = out.setdefault(key, {})
                for name, v in values.items():
                    cell[name] = max(cell.get(name, 0), v) if name == "longest_wait_s" else cell.get(name, 0) + v
        return out

    def drop_partition(self, partition: int) -> None:
        """Forget a revoked partition (its state lives on in the changelog)."""
        self.shards.pop(partition, None)

    # -- persistence ---------------------------------------------------------------------------
    def drain(self) -> Drained:
        out = Drained()
        for src in self.sources():
            p, u = src.partition, src.cur
            out.messages.extend(src.messages)
            src.messages = []
            for start in src.dirty_windows:
                key = (p, state_key(src, "w", start))
                w = src.windows.get(start)
                if w is not None:
                    chunk = w.next_chunk()
                    if chunk is not None:
                        name = f"{start}:{chunk[0]}"
                        out.chunks[(p, state_key(src, "x", name))] = {**chunk[1], "_u": u}
                        src.gone_chunks.discard(name)
                    out.windows[key] = {**w.to_state(), "_u": u}
                    src.stored_windows.add(start)
                elif start in src.markers:
                    out.windows[key] = {"closed": True, "_u": src.markers[start]}
                    src.stored_windows.add(start)
            for start in src.gone_markers:
                if start in src.stored_windows:  # else never written: nothing to delete
                    out.windows[(p, state_key(src, "w", start))] = None
                    src.stored_windows.discard(start)
            for name in src.gone_chunks:  # after the windows' markers: a crash between keeps them
                out.garbage[(p, state_key(src, "x", name))] = None
            if src.new_ids:  # counted on restore only once the meta says its batch is durable
                newest = max(ts for _, _, ts in src.new_ids)
                out.chunks[(p, state_key(src, "d", u))] = {"ids": src.new_ids, "_u": u}
                src.id_logs.append((u, newest, src.new_ids))
                src.new_ids = []
                src.gone_logs.discard(u)
            for log in src.gone_logs:
                out.garbage[(p, state_key(src, "d", log))] = None
            for name in src.dirty_facts:
                f = src.facts.get(name)
                if f is not None:
                    fact = {**f, "_u": u}
                    del fact["seen"]  # in the dedup logs
                    out.facts[(p, state_key(src, "f", name))] = fact
            for name in src.gone_facts:
                out.facts[(p, state_key(src, "f", name))] = None
            if src.meta_dirty:
                src.upto = max(src.upto, src.cur)
                out.metas[(p, state_key(src, "m"))] = {
                    "st": src.st,
                    "closed": src.closed,
                    "emitted": src.emitted,
                    "upto": src.upto,
                }
            src.dirty_windows, src.gone_markers, src.gone_chunks, src.gone_logs = set(), set(), set(), set()
            src.dirty_facts, src.gone_facts = set(), set()
            src.meta_dirty = False
            if src.guard_facts or src.guard_windows:
                highest = max(chain(src.guard_facts.values(), src.guard_windows.values()))
                if src.cur >= highest:
                    src.guard_facts, src.guard_windows = {}, {}
        return out

    def restore(self, partition: int, items: Iterable[tuple[str, Any]], now: float) -> int:
        """Rebuild a partition's sources from table entries; return how many were read."""
        self.shards.pop(partition, None)
        self.ensure_shard(partition, now)
        by_source: dict[str, list[tuple[str, str, Any]]] = {}
        count = 0
        for key, value in items:
            topic, part, kind, name = key.split("|", 3)
            if int(part) != partition or value is None or topic not in self.family_of:
                continue
            by_source.setdefault(topic, []).append((kind, name, value))
            count += 1
        for topic, entries in by_source.items():
            src = self.source(topic, partition)
            chunks: dict[int, dict[int, Any]] = {}  # window start -> number -> chunk
            for kind, name, value in entries:
                if kind == "x":
                    start, number = name.split(":")
                    chunks.setdefault(int(start), {})[int(number)] = value
                if kind == "m":
                    src.st, src.closed, src.emitted = value["st"], value["closed"], value["emitted"]
                    src.upto = src.cur = value["upto"]
                    src.st_at_arrival = src.st or 0.0
            for kind, name, value in entries:
                u = value.get("_u", -1)
                if kind == "w":
                    start = int(name)
                    src.stored_windows.add(start)
                    if value.get("closed"):
                        src.markers[start] = u
                    else:
                        src.windows[start] = OpenWindow.from_state(start, value, src.n, chunks.get(start, {}))
                    if u > src.upto:
                        src.guard_windows[start] = u
                elif kind == "f":
                    f = {k: v for k, v in value.items() if k != "_u"}
                    f["seen"] = dict(f.get("seen") or {})  # inline in entries older than the logs
                    src.facts[name] = f
                    if u > src.upto:
                        src.guard_facts[name] = u
            logs = sorted((int(name), value["ids"]) for kind, name, value in entries if kind == "d")
            for u, ids in logs:
                if u > src.upto:  # its batch was in flight: the replay logs its ids again
                    src.gone_logs.add(u)
                    continue
                for key, event_id, ts in ids:
                    f = src.facts.get(key)
                    if f is not None:
                        f["seen"][event_id] = ts
                src.id_logs.append((u, max(ts for _, _, ts in ids), ids))
            for start, numbered in chunks.items():  # chunks of closed windows, or never counted
                w = src.windows.get(start)
                src.gone_chunks.update(f"{start}:{i}" for i in numbered if w is None or i >= w.chunks)
            src.index_facts()
            src.loaded()
        return count
