"""Stage 1 of the KPI engine: one processor per source (input topic partition).

A source keeps its own stream time, so whether an event is late depends only on the order of
that partition, which Kafka fixes: the same input gives the same result however the consumer
interleaves partitions, and a batch recomputation can reproduce it exactly. For each event, in
partition order:

1. stream time := max(stream time, ts); if that moves the closed boundary, run the family's
   close hooks (orphan sweep, ongoing agent intervals) and close the base windows before it;
2. an event whose base window is closed is **late** (dead-lettered, never counted);
3. an ``event_id`` already seen for the same entity is a **duplicate** (counted once);
4. otherwise it updates the entity's facts and the partial KPI state of its base window: one
   partial per *cell*, the dimension values the event counts in (``cellkey``), which stage 2
   adds into each of them.

Closed windows leave as partial messages for the merger (stage 2), which adds up the sources.

Crash safety (at-least-once input): each persisted entry remembers the offset of the last
record applied to it (``_u``). The worker persists in dependency order - partial messages, then
window chunks, windows, facts, the source meta, and last the tombstones of chunks no longer
needed (``Drained.groups``) - so after a crash, a replayed record whose entity facts already
include it is skipped whole, and a window that already includes it is not added to twice. The
meta's ``upto`` marks records whose every effect is durable: they are skipped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from typing import Any

from schemas.events import (
    AgentState,
    AgentStateEvent,
    CallEvent,
    CallEventKind,
    EventBase,
    SurveyEvent,
    TicketEvent,
    TicketEventKind,
)
from schemas.pii import Pseudonymizer
from streams.partial import KpiPartial, wait_bucket
from streams.windows import closed_boundary, floor_to, is_late, split_by_window

ALL = "all\t"
_AGENT = "agent\t"  # the per-agent dimension: never part of a cell (an agent's cells would multiply)
_DIM_CACHE_MAX = 65_536  # dimension combinations cached per source (a center: hundreds; surveys x agents more)

# Per event, an enum member's value is read as ``member._value_`` (the attribute ``enum``
# stores it in, a documented sunder name): ``member.value`` is a Python-level property, about
# 3 % of a worker reading one event per record.


def dimkey(dimension: str, value: str) -> str:
    return f"{dimension}\t{value}"


def split_dimkey(key: str) -> tuple[str, str]:
    dimension, _, value = key.partition("\t")
    return dimension, value


#: Joins the dimension keys of a *cell*: the partial an event's every dimension shares. A call
#: belongs to ``all``, its queue, channel and business type; stage 1 keeps one partial for that
#: combination instead of four, and stage 2 adds each cell into its dimensions (``split_cell``)
#: once per window, after adding up the sources. (Names cannot hold a newline: ``schemas.events``.)
CELL_SEP = "\n"


def cellkey(keys: tuple[str, ...] | list[str]) -> str:
    """The cell of dimension ``keys`` (a single key is its own cell)."""
    return keys[0] if len(keys) == 1 else CELL_SEP.join(keys)


def split_cell(key: str) -> list[str]:
    """The dimension keys of a cell (of a plain dimension key: itself)."""
    return key.split(CELL_SEP)


@dataclass(frozen=True)
class EngineParams:
    """The settings the pure engine needs (see ``callpulse.config.Settings``)."""

    base: int = 60
    grace: int = 120
    thresholds: tuple[int, ...] = (20, 30)
    short_abandon: float = 5.0
    orphan_timeout: int = 7200
    agent_state_timeout: int = 86_400
    retention: int = 86_400
    idle_timeout: float = 30.0
    pii_key: str = "callpulse-dev-key-change-me"

    @classmethod
    def from_settings(cls, s: Any) -> EngineParams:
        return cls(
            base=s.base_window_s,
            grace=s.grace_s,
            thresholds=tuple(s.sl_thresholds_s),
            short_abandon=s.short_abandon_s,
            orphan_timeout=s.orphan_timeout_s,
            agent_state_timeout=s.agent_state_timeout_s,
            retention=s.facts_retention_s,
            idle_timeout=s.idle_timeout_s,
            pii_key=s.pii_key.get_secret_value(),
        )

    @property
    def dedup_horizon(self) -> int:
        """How long an event id must be remembered: after this, a re-delivery is late anyway."""
        return self.grace + 2 * self.base


class OpenWindow:
    """A base window of one source still accepting events.

    ``firsts`` and ``pending`` only grow while the window is open (a busy minute holds thousands
    of them), so they are persisted as append-only *chunks*, one per batch that added to them,
    instead of being rewritten whole with the window after every batch. The window's own entry
    (its partials) names how many chunks belong to it: a chunk written by a batch whose window
    entry never became durable is not counted, and is rewritten when its records are replayed.
    """

    __slots__ = (
        "chunks",
        "firsts",
        "parts",
        "pending",
        "saved_firsts",
        "saved_parts",
        "saved_pending",
        "start",
        "touched",
    )

    def __init__(self, start: int) -> None:
        self.start = start
        self.parts: dict[str, KpiPartial] = {}
        # the serialised form of each partial as last persisted, and the keys changed since:
        # a batch re-serialises only those (a minute of a busy center has hundreds of partials)
        self.saved_parts: dict[str, dict[str, Any]] = {}
        self.touched: set[str] = set()
        self.firsts: list[list[Any]] = []  # first contacts / tickets, for repeat detection
        self.pending: list[list[Any]] = []  # surveys waiting for the contact join
        self.chunks = 0  # chunks persisted so far
        self.saved_firsts = 0  # items of ``firsts`` / ``pending`` in those chunks
        self.saved_pending = 0

    def next_chunk(self) -> tuple[int, dict[str, Any]] | None:
        """The number and content of the chunk holding what this window gained since its last
        one (None if nothing): call before ``to_state``, which then counts it."""
        firsts, pending = self.firsts[self.saved_firsts :], self.pending[self.saved_pending :]
        if not firsts and not pending:
            return None
        self.saved_firsts, self.saved_pending = len(self.firsts), len(self.pending)
        self.chunks += 1
        return self.chunks - 1, {"firsts": firsts, "pending": pending}

    def part(self, key: str, n: int) -> KpiPartial:
        """The partial of dimension ``key``, to be changed (created if new)."""
        self.touched.add(key)
        p = self.parts.get(key)
        if p is None:
            p = self.parts[key] = KpiPartial(n)
        return p

    def to_state(self) -> dict[str, Any]:
        saved = self.saved_parts
        for key in self.touched:
            saved[key] = self.parts[key].to_dict()
        self.touched = set()
        # a copy: the table keeps this value while the window changes on
        return {"parts": dict(saved), "chunks": self.chunks}

    @classmethod
    def from_state(cls, start: int, data: dict[str, Any], n: int, chunks: dict[int, Any]) -> OpenWindow:
        """Rebuild from the window's entry and its chunks by number (extra ones are ignored).
        Entries written before chunks existed hold ``firsts`` and ``pending`` inline."""
        w = cls(start)
        w.saved_parts = dict(data.get("parts", {}))
        w.parts = {k: KpiPartial.from_dict(v, n) for k, v in w.saved_parts.items()}
        w.firsts = list(data.get("firsts", []))
        w.pending = list(data.get("pending", []))
        w.chunks = data.get("chunks", 0)
        for i in range(w.chunks):
            if i not in chunks:
                raise RuntimeError(f"window {start}: chunk {i} of {w.chunks} is missing from the state table")
            w.firsts.extend(chunks[i]["firsts"])
            w.pending.extend(chunks[i]["pending"])
        w.saved_firsts, w.saved_pending = len(w.firsts), len(w.pending)
        if "chunks" not in data:
            w.saved_firsts = w.saved_pending = 0  # inline lists go to the first chunk
        return w


class Outcome:
    """What one record did. A plain class, not a dataclass: one is made per record, and a
    dataclass's generated ``__init__`` stays interpreted Python in the compiled engine (3 % of
    a worker reading one event per record)."""

    __slots__ = ("accepted", "duplicates", "late", "skipped")

    def __init__(self) -> None:
        self.accepted = 0
        self.duplicates = 0
        self.skipped = 0  # already applied before a restart
        self.late: list[EventBase] = []


class Source:
    """State and processing of one input topic partition; subclasses add the family's KPIs."""

    family = ""

    def __init__(self, topic: str, partition: int, params: EngineParams, shard: dict[str, Source]) -> None:
        self.topic = topic
        self.partition = partition
        self.id = f"{topic}:{partition}"
        self.p = params
        self.n = len(params.thresholds)
        self.shard = shard
        self.st: float | None = None  # stream time
        self.closed: int | None = None  # logical closed boundary (lateness)
        self.emitted: int | None = None  # windows before this have left as messages
        self.upto = -1  # records up to this offset are applied and durable
        self.windows: dict[int, OpenWindow] = {}
        self.markers: dict[int, int] = {}  # closed window start -> offset that closed it
        self.facts: dict[str, dict[str, Any]] = {}
        self.by_last: list[tuple[float, str]] = []  # the facts by last event, for ``prune``
        self.last_arrival: float | None = None
        self.assigned_at: float | None = None
        self._pruned_at: int | None = None
        # persistence bookkeeping
        self.cur = -1
        self.dirty_windows: set[int] = set()
        self.dirty_facts: set[str] = set()
        self.gone_facts: set[str] = set()
        self.gone_markers: set[int] = set()
        # window starts with an entry in the table (open state or closed marker): a window that
        # opens, closes and has its marker pruned between two drains (a catch-up's batch spans
        # hours) was never written, so it needs no tombstone (they were 30 % of a catch-up's
        # stage-1 changelog)
        self.stored_windows: set[int] = set()
        self.gone_chunks: set[str] = set()  # "start:number" of chunks no window needs any more
        # de-duplication: event ids live in the entity's facts (``seen``) and are persisted in one
        # append-only log per batch, not with the facts (which would rewrite them all); new ids
        # wait here as (entity key, event id, ts): tuples of atoms, which the cyclic garbage
        # collector stops tracking, unlike lists
        self.new_ids: list[tuple[str, str, float]] = []
        self.id_logs: deque[tuple[int, float, list[Any]]] = deque()  # (offset, newest ts, ids)
        self.gone_logs: set[int] = set()
        self.guard_windows: dict[int, int] = {}
        self.guard_facts: dict[str, int] = {}
        self.messages: list[dict[str, Any]] = []
        self.meta_dirty = False
        self.pseudo = Pseudonymizer(params.pii_key)
        self._dim_cache: dict[tuple[tuple[str, str | None], ...], tuple[str, ...]] = {}
        self.st_at_arrival = 0.0

    # -- entry points --------------------------------------------------------------------------
    def record(self, offset: int, events: list[EventBase], now: float | None = None) -> Outcome:
        """Apply one Kafka record's events (one event, or an envelope's)."""
        out = Outcome()
        if offset <= self.upto:
            out.skipped = len(events)
            return out
        self.cur = offset
        self.last_arrival = now
        self.meta_dirty = True
        for e in events:
            ts = e.ts.timestamp()
            self._advance(ts)
            if is_late(ts, self.st, self.p.base, self.p.grace):  # type: ignore[arg-type]
                out.late.append(e)
                continue
            key = self.entity_key(e)
            if self.guard_facts.get(key, -1) >= offset:
                # applied before a crash, but its id was in a dedup log never counted: remember it
                guarded = self.facts.get(key)
                if guarded is not None:
                    guarded["seen"][e.event_id] = ts
                    self.new_ids.append((key, e.event_id, ts))
                out.skipped += 1
                continue
            f = self.facts.get(key)
            if f is None:
                f = self.new_facts(e)
                self.facts[key] = f
                self.gone_facts.discard(key)
                heappush(self.by_last, (f["last"], key))
            seen = f["seen"]
            if e.event_id in seen:
                out.duplicates += 1
                continue
            seen[e.event_id] = ts
            self.new_ids.append((key, e.event_id, ts))
            if ts > f["last"]:
                f["last"] = ts
            self.dirty_facts.add(key)
            self.apply(e, ts, f)
            out.accepted += 1
        self.st_at_arrival = self.st if self.st is not None else 0.0
        return out

    def watermark(self, offset: int, ts: float, now: float | None = None) -> None:
        """A producer's promise that no older event follows on this partition."""
        if offset <= self.upto:
            return
        self.cur = offset
        self.last_arrival = now
        self.meta_dirty = True
        self._advance(ts)
        self.st_at_arrival = self.st  # type: ignore[assignment]

    def tick(self, now: float, engine_min_st: float | None) -> None:
        """Wall-clock heartbeat: an idle source still moves on, so silence closes windows."""
        idle_since = self.last_arrival if self.last_arrival is not None else self.assigned_at
        if idle_since is None or now - idle_since < self.p.idle_timeout:
            return
        if self.st is None:
            if engine_min_st is None:
                return
            target = engine_min_st
        else:
            target = self.st_at_arrival + (now - idle_since)
        if self.st is None or target > self.st:
            self.meta_dirty = True
            self._advance(target)
            if self.last_arrival is None:
                self.last_arrival = now
                self.st_at_arrival = target

    def settle(self) -> None:
        """Emit what became emittable outside the source's own progress (surveys wait for calls)."""

    # -- time ------------------------------------------------------------------------------------
    def _advance(self, ts: float) -> None:
        if self.st is None or ts > self.st:
            self.st = ts
        elif self.closed is not None:
            return  # stream time did not move: nothing can close
        boundary = closed_boundary(self.st, self.p.base, self.p.grace)
        if self.closed is None:
            self.closed = boundary
            self.emitted = boundary
            self.messages.append({"source": self.id, "closed": boundary})
            return
        if boundary > self.closed:
            self.on_close(self.closed, boundary)
            self.closed = boundary
            self.emit_until(self.emit_target())
            self.forget_ids(boundary)
            # once an hour of this source's own stream time: a prune walks every entity's facts,
            # and a calls source's prune stops at the surveys' position (``CallsSource.prune``),
            # which may be hours behind in a catch-up; measured from the boundary it pruned at,
            # every window close walked them all again
            if self._pruned_at is None or boundary - self._pruned_at >= 3600:
                self._pruned_at = boundary
                self.prune(boundary)

    def emit_target(self) -> int:
        return self.closed  # type: ignore[return-value]

    def emit_until(self, target: int) -> None:
        """Close and emit every open window ending at or before ``target``."""
        if self.emitted is not None and target <= self.emitted:
            return
        for start in sorted([w for w in self.windows if w + self.p.base <= target]):
            window = self.windows.pop(start)
            self.gone_chunks.update([f"{start}:{i}" for i in range(window.chunks)])
            self.finish_window(window)
            self.messages.append(self.window_message(window))
            self.markers[start] = self.cur
            self.dirty_windows.add(start)
        self.emitted = target
        self.messages.append({"source": self.id, "closed": target})

    def window_message(self, w: OpenWindow) -> dict[str, Any]:
        parts = {}
        for k, p in w.parts.items():
            d = p.to_message()
            if d is not None:
                parts[k] = d
        end = w.start + self.p.base
        return {"source": self.id, "window": w.start, "closed": end, "parts": parts, "firsts": w.firsts}

    def window(self, ts: float) -> OpenWindow | None:
        """The open window for ``ts`` to write into, or None when a replay finds it done."""
        start = floor_to(ts, self.p.base)
        if start in self.markers or self.guard_windows.get(start, -1) >= self.cur:
            return None
        w = self.windows.get(start)
        if w is None:
            if self.emitted is not None and start + self.p.base <= self.emitted:
                return None  # closed already (only reachable by hooks on a replay)
            w = self.windows[start] = OpenWindow(start)
        self.dirty_windows.add(start)
        return w

    def dims(self, pairs: tuple[tuple[str, str | None], ...]) -> tuple[str, ...]:
        """``all`` plus a key per (dimension, value) with a value."""
        return self.cell(pairs)[0]

    def cell(self, pairs: tuple[tuple[str, str | None], ...]) -> tuple[tuple[str, ...], str]:
        """``dims(pairs)`` and their cell key; cached, since a source sees few distinct
        combinations and builds them for every event. (One tuple argument, not ``*pairs``: a
        method with a fixed signature is a direct call when compiled.)"""
        found = self._dim_cache.get(pairs)
        if found is None:
            if len(self._dim_cache) >= _DIM_CACHE_MAX:  # values sent by mistake (an id as a queue)
                self._dim_cache.clear()  # must not grow the worker without bound
            keys = (ALL, *[dimkey(d, v) for d, v in pairs if v])
            found = self._dim_cache[pairs] = (keys, cellkey(keys))
        return found

    def prune(self, boundary: int) -> None:
        """Forget entities idle for the retention period, and old closed-window markers.

        The facts are found through ``by_last``, a heap of (a time at or before the entity's
        last event, key), one entry per entity: a prune pops the entries older than the cutoff,
        forgets those entities whose last event is too, and puts the others back with their
        last event. Walking every entity's facts instead (each prune, once an hour of stream
        time) looked at each about 24 times in its day of retention."""
        cutoff = boundary - self.p.retention
        heap = self.by_last
        keep: list[tuple[float, str]] = []
        while heap and heap[0][0] < cutoff:
            key = heappop(heap)[1]
            f = self.facts.get(key)
            if f is None:
                continue  # an entry without facts (never in the engine's own paths): nothing to forget
            last = f["last"]
            if last < cutoff and self.may_forget(f):
                del self.facts[key]
                self.dirty_facts.discard(key)
                self.gone_facts.add(key)
            else:
                keep.append((last, key))  # newer than its entry, or still needed (an open contact)
        for entry in keep:
            heappush(heap, entry)
        for start in [s for s in self.markers if s < boundary - 3600]:
            del self.markers[start]
            self.gone_markers.add(start)

    def index_facts(self) -> None:
        """``by_last`` from the facts (after a restore)."""
        self.by_last = [(f["last"], key) for key, f in self.facts.items()]
        heapify(self.by_last)

    def forget_ids(self, boundary: int) -> None:
        """Drop the dedup logs (and their ids) older than the dedup horizon: an event that old
        is in a closed window, so a re-delivery of it is late before it could be a duplicate."""
        cutoff = boundary - self.p.dedup_horizon - self.p.base
        logs = self.id_logs
        while logs and logs[0][1] < cutoff:
            u, _, ids = logs.popleft()
            for key, event_id, ts in ids:
                f = self.facts.get(key)
                if f is not None and f["seen"].get(event_id) == ts:
                    del f["seen"][event_id]
            self.gone_logs.add(u)

    # -- family hooks --------------------------------------------------------------------------
    def entity_key(self, e: Any) -> str:
        raise NotImplementedError

    def new_facts(self, e: Any) -> dict[str, Any]:
        return {"seen": {}, "last": e.ts.timestamp()}

    def apply(self, e: Any, ts: float, f: dict[str, Any]) -> None:
        raise NotImplementedError

    def on_close(self, old: int, new: int) -> None:
        """Runs when the closed boundary moves from ``old`` to ``new``, before windows close."""

    def finish_window(self, w: OpenWindow) -> None:
        """Last touches to a window's partials before it leaves."""

    def may_forget(self, f: dict[str, Any]) -> bool:
        return True

    def loaded(self) -> None:
        """Rebuild derived indexes after state was restored."""

    def live(self) -> dict[str, dict[str, float]]:
        """Running values for live gauges (families that have any)."""
        return {}


class CallsSource(Source):
    """Contacts: volumes, waits, service level, handle times, levels, orphans."""

    family = "calls"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_ids: set[str] = set()

    def entity_key(self, e: CallEvent) -> str:
        return e.contact_id

    def new_facts(self, e: CallEvent) -> dict[str, Any]:
        return {
            "seen": {},
            "last": e.ts.timestamp(),
            "dims": list(self._event_cell(e)[0]),
            "open": False,
            "waiting": False,
            "term": False,
            "ans_ts": None,
            "wait": None,
        }

    def loaded(self) -> None:
        self.open_ids = {k for k, f in self.facts.items() if f["open"]}

    def may_forget(self, f: dict[str, Any]) -> bool:
        return not f["open"]

    def live(self) -> dict[str, dict[str, float]]:
        """Contacts waiting and in progress now, and the longest current wait, per dimension
        value, as of this partition's stream time."""
        out: dict[str, dict[str, float]] = {}
        now = self.st or 0.0
        for cid in self.open_ids:
            f = self.facts[cid]
            for key in f["dims"]:
                cell = out.setdefault(key, {"waiting": 0, "in_progress": 0, "longest_wait_s": 0.0})
                cell["in_progress"] += 1
                if f["waiting"]:
                    cell["waiting"] += 1
                    cell["longest_wait_s"] = max(cell["longest_wait_s"], now - f.get("enq", now))
        return out

    def prune(self, boundary: int) -> None:
        # The survey join reads these facts: keep them until the surveys source has caught up
        # (an idle surveys source gets a position from the heartbeat, so this cannot block forever).
        surveys = self.shard.get("surveys")
        if surveys is not None:
            if surveys.emitted is None:
                return
            boundary = min(boundary, surveys.emitted)
        Source.prune(self, boundary)  # not ``super()``: a compiled method override has no ``__class__`` cell

    def _level(self, f: dict[str, Any], level: str, ts: float, delta: int) -> None:
        w = self.window(ts)
        if w is None:
            return
        w.part(cellkey(f["dims"]), self.n).add_level(level, int(ts) - w.start, delta)

    def _event_cell(self, e: CallEvent) -> tuple[tuple[str, ...], str]:
        return self.cell((("queue", e.queue), ("channel", e.channel._value_), ("business_type", e.business_type)))

    def apply(self, e: CallEvent, ts: float, f: dict[str, Any]) -> None:
        kind = e.kind
        w = self.window(ts)
        dims, cell = self._event_cell(e)
        p = w.part(cell, self.n) if w is not None else None
        if kind is CallEventKind.offered:
            if p is not None:
                p.offered += 1
                if e.customer_id:
                    p.offered_identified += 1
                    w.firsts.append(["contact", self.pseudo.token(e.customer_id), ts, e.contact_id, "", list(dims)])
            if not f["open"] and not f["term"]:
                f["open"] = f["waiting"] = True
                f["enq"] = ts
                self.open_ids.add(e.contact_id)
                self._level(f, "in_progress", ts, +1)
                self._level(f, "waiting", ts, +1)
        elif kind is CallEventKind.answered:
            wait = e.wait_seconds or 0.0
            if p is not None:
                p.answered += 1
                p.answered_wait_sum += wait
                p.add_wait(wait)
                for i, t in enumerate(self.p.thresholds):
                    if wait <= t:
                        p.answered_within[i] += 1
            f["ans_ts"], f["wait"] = ts, wait
            if f["waiting"]:
                f["waiting"] = False
                self._level(f, "waiting", ts, -1)
        elif kind is CallEventKind.abandoned:
            wait = e.wait_seconds or 0.0
            if p is not None:
                p.abandoned += 1
                p.abandoned_wait_sum += wait
                p.add_wait(wait)
                if wait <= self.p.short_abandon:
                    p.short_abandoned += 1
                for i, t in enumerate(self.p.thresholds):
                    if wait <= t:
                        p.abandoned_within[i] += 1
            self._terminate(f, e.contact_id, ts)
        elif kind is CallEventKind.ended:
            if p is not None:
                talk, hold, acw = e.talk_seconds or 0.0, e.hold_seconds or 0.0, e.acw_seconds or 0.0
                _handled(p, talk, hold, acw)
                if e.agent_id:
                    _handled(w.part(dimkey("agent", e.agent_id), self.n), talk, hold, acw)
            self._terminate(f, e.contact_id, ts)
        elif p is None:
            return  # a transfer or a ring-no-answer in a window done (a replay): nothing to count
        elif kind is CallEventKind.transferred:
            p.transferred += 1
        elif kind is CallEventKind.ring_no_answer:
            p.rona += 1
            if e.agent_id:
                w.part(dimkey("agent", e.agent_id), self.n).rona += 1

    def _terminate(self, f: dict[str, Any], contact_id: str, ts: float) -> None:
        f["term"] = True
        if f["waiting"]:
            f["waiting"] = False
            self._level(f, "waiting", ts, -1)
        if f["open"]:
            f["open"] = False
            self.open_ids.discard(contact_id)
            self._level(f, "in_progress", ts, -1)

    def on_close(self, old: int, new: int) -> None:
        """Orphan sweep: a contact with no event for ``orphan_timeout`` is closed out as an
        orphan at ``last + orphan_timeout``, so a lost end event cannot hang a KPI."""
        for cid in sorted(self.open_ids):
            if self.guard_facts.get(cid, -1) >= self.cur:
                continue
            f = self.facts[cid]
            deadline = f["last"] + self.p.orphan_timeout
            if deadline >= new:
                continue
            w = self.window(deadline)
            if w is not None:
                w.part(cellkey(f["dims"]), self.n).orphaned += 1
            f["orphan"] = True
            self._terminate(f, cid, deadline)
            self.dirty_facts.add(cid)


def _handled(p: KpiPartial, talk: float, hold: float, acw: float) -> None:
    """A handled contact's times (its cell's partial, and its agent's)."""
    p.handled += 1
    p.talk_sum += talk
    p.hold_sum += hold
    p.acw_sum += acw
    p.held += hold > 0
    p.with_acw += acw > 0


AGENT_STATE_FIELD = {
    AgentState.ready: "ready_s",
    AgentState.busy: "busy_s",
    AgentState.after_call_work: "acw_state_s",
    AgentState.not_ready: "not_ready_s",
    AgentState.logged_in: "not_ready_s",  # logged in but not yet ready
}
_FIELD_BY_STATE = {state.value: name for state, name in AGENT_STATE_FIELD.items()}
_LOGGED_OUT = AgentState.logged_out.value


class AgentsSource(Source):
    """Agent states: time in state per window (occupancy, utilisation, staffed agents)."""

    family = "agents"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Agents in a timed state, counted per (state field, pause reason, dimension keys) once
        # their state began before the closed boundary: a window close then credits each group
        # once (count x seconds), O(groups) instead of O(agents). Agents whose state began later
        # (``joined``) are credited one by one at the next close, then join their group.
        self.levels: dict[tuple[str, str | None, tuple[str, ...]], int] = {}
        self.joined: set[str] = set()
        # (since + agent_state_timeout, agent, since) of agents in a timed state: a state with no
        # event for the timeout ends there, the agent logged out (a lost log-out cannot keep an
        # agent staffed forever, nor have every later window credited one by one). A heap: the
        # close looks at the earliest only; entries of states that changed since are skipped.
        self.expiry: list[tuple[float, str, float]] = []
        # agents now per dimension keys and state, for the live gauges: kept as states change,
        # since a heartbeat walking every agent's facts took 120 ms of each second with 40,000 agents
        self.present: dict[tuple[str, ...], dict[str, int]] = {}

    def entity_key(self, e: AgentStateEvent) -> str:
        return e.agent_id

    def new_facts(self, e: AgentStateEvent) -> dict[str, Any]:
        return {
            "seen": {},
            "last": e.ts.timestamp(),
            "state": None,
            "since": None,
            "cred": None,
            "queues": [],
            "reason": None,
        }

    def may_forget(self, f: dict[str, Any]) -> bool:
        return f["state"] in (None, _LOGGED_OUT)

    def live(self) -> dict[str, dict[str, float]]:
        """Agents in each state now, per dimension value (all and each queue)."""
        out: dict[str, dict[str, float]] = {}
        for keys, counts in self.present.items():
            for state, n in counts.items():
                name = f"agents_{state}"
                for key in keys:
                    cell = out.setdefault(key, {})
                    cell[name] = cell.get(name, 0) + n
                    cell["agents_staffed"] = cell.get("agents_staffed", 0) + n
        return out

    def _count_present(self, state: str, keys: tuple[str, ...], delta: int) -> None:
        """``delta`` agents in ``state`` with dimension ``keys`` (counts that reach 0 are removed)."""
        counts = self.present.get(keys)
        if counts is None:
            counts = self.present[keys] = {}
        n = counts.get(state, 0) + delta
        if n:
            counts[state] = n
        else:
            del counts[state]
            if not counts:
                del self.present[keys]

    def _group(self, f: dict[str, Any]) -> tuple[str, str | None, tuple[str, ...]] | None:
        state = f["state"]
        name = _FIELD_BY_STATE.get(state)
        if name is None:
            return None
        reason = None
        if state == "not_ready":
            reason = f["reason"] or "unspecified"
        elif state == "logged_in":
            reason = "login"
        return name, reason, self._queue_dims(f["queues"])

    def _credit_group(self, group: tuple[str, str | None, tuple[str, ...]], start: float, end: float, n: int) -> None:
        """Add ``n`` agents' seconds in ``[start, end)`` to every window it overlaps."""
        name, reason, keys = group
        if n:
            self._credit_cells({(name, reason, key): n for key in keys}, start, end)

    def _credit_levels(self, start: int, end: int) -> None:
        """Credit every group over ``[start, end)``: agents per (state field, reason, dimension
        key) summed over the groups first, so each window and key is touched once per close."""
        cells: dict[tuple[str, str | None, str], int] = {}
        for (name, reason, keys), n in self.levels.items():
            for key in keys:
                cell = (name, reason, key)
                cells[cell] = cells.get(cell, 0) + n
        self._credit_cells(cells, start, end)

    def _credit_cells(self, cells: dict[tuple[str, str | None, str], int], start: float, end: float) -> None:
        """Add ``n`` agents x seconds of ``[start, end)`` to the state field (and pause reason) of
        each dimension key, in every window the interval overlaps."""
        if not cells:
            return
        for wstart, secs in split_by_window(start, end, self.p.base):
            w = self.window(wstart)
            if w is None:
                continue
            for (name, reason, key), n in cells.items():
                self._add_seconds(w.part(key, self.n), name, reason, n * secs)

    def _credit_seconds(self, seconds: dict[tuple[int, tuple[str, str | None, tuple[str, ...]]], float]) -> None:
        """Add agent seconds per (window start, group) to each dimension key of the group."""
        at, w = None, None
        for (wstart, (name, reason, keys)), secs in seconds.items():
            if wstart != at:
                at, w = wstart, self.window(wstart)
            if w is not None:
                for key in keys:
                    self._add_seconds(w.part(key, self.n), name, reason, secs)

    def _add_seconds(self, p: KpiPartial, name: str, reason: str | None, secs: float) -> None:
        """The one place agent seconds go into a partial: the state field, and the pause reason."""
        setattr(p, name, getattr(p, name) + secs)
        if reason is not None:
            p.not_ready_reasons[reason] = p.not_ready_reasons.get(reason, 0) + secs

    def _credit(self, f: dict[str, Any], start: float, end: float) -> None:
        """Add the interval's seconds in the agent's state to every window it overlaps."""
        group = self._group(f)
        if group is not None:
            self._credit_group(group, start, end, 1)

    def _untrack(self, aid: str, group: tuple[str, str | None, tuple[str, ...]]) -> None:
        """The agent leaves ``group`` (its state's): out of ``joined``, or one less in the group."""
        if aid in self.joined:
            self.joined.discard(aid)
            return
        left = self.levels.get(group, 0) - 1
        if left > 0:
            self.levels[group] = left
        else:
            self.levels.pop(group, None)

    def loaded(self) -> None:
        self._regroup(self.closed)

    def _regroup(self, boundary: int | None) -> None:
        """Rebuild the groups from the facts: agents whose state began before ``boundary``."""
        self.levels, self.joined, self.present = {}, set(), {}
        self._rebuild_expiry()
        for aid, f in self.facts.items():
            group = self._group(f)
            if group is None:
                continue
            self._count_present(f["state"], group[2], 1)
            if f["since"] is None:
                continue
            if boundary is not None and f["since"] < boundary:
                self.levels[group] = self.levels.get(group, 0) + 1
            else:
                self.joined.add(aid)

    def _queue_dims(self, queues: list[str]) -> tuple[str, ...]:
        return self.dims(tuple([("queue", q) for q in queues]))

    def apply(self, e: AgentStateEvent, ts: float, f: dict[str, Any]) -> None:
        if f["since"] is not None and ts < f["since"]:
            return  # older than the agent's current state: counted, but time accounting stays
        aid = e.agent_id
        keys = None  # the agent's dimension keys, when known and still its queues'
        if f["state"] is not None:
            group = self._group(f)  # once: crediting and leaving the group both need it
            if group is not None:
                since = f["since"]
                start = max(since, f["cred"] or since, self.closed or since)
                self._credit_group(group, start, min(ts, since + self.p.agent_state_timeout), 1)
                self._untrack(aid, group)
                keys = group[2]
                self._count_present(f["state"], keys, -1)
        f["state"], f["since"], f["cred"], f["reason"] = e.state._value_, ts, None, e.reason
        queues = e.queues
        if queues and queues != f["queues"]:
            f["queues"] = list(queues)
            keys = None
        if f["state"] in _FIELD_BY_STATE:  # a timed state: credited alone at the next close, then grouped
            self._count_present(f["state"], keys if keys is not None else self._queue_dims(f["queues"]), 1)
            self.joined.add(aid)
            heappush(self.expiry, (ts + self.p.agent_state_timeout, aid, ts))
            if len(self.expiry) > 2 * len(self.facts) + 1024:
                self._rebuild_expiry()  # the entries of states since changed: at most half

    def on_close(self, old: int, new: int) -> None:
        """Credit every ongoing state interval up to the new boundary before windows close."""
        if self.guard_facts:
            self._on_close_replaying(old, new)
            return
        self._expire(old, new)
        self._credit_levels(old, new)
        # the agents who changed state since the last close: their seconds are summed per window
        # and group first (in agent order), then added to the group's partials once, as the
        # groups' are. One by one, each agent cost a window lookup and a partial update per
        # dimension key: a fifth of stage 1's work for a center of 40,000 agents (instructions
        # counted, docs/performance.md)
        seconds: dict[tuple[int, tuple[str, str | None, tuple[str, ...]]], float] = {}
        base = self.p.base
        for aid in sorted(self.joined):
            f = self.facts[aid]
            since = f["since"]
            if since >= new:
                continue
            group = self._group(f)  # never None: only agents in a timed state join
            start = max(since, old)
            for wstart, secs in split_by_window(start, new, base):
                cell = (wstart, group)
                seconds[cell] = seconds.get(cell, 0) + secs  # type: ignore[index]
            self.joined.discard(aid)
            self.levels[group] = self.levels.get(group, 0) + 1  # type: ignore[index]
        self._credit_seconds(seconds)

    def _expire(self, old: int, new: int) -> None:
        """Agents whose state reaches the timeout by ``new``: credited up to it, then logged out."""
        heap = self.expiry
        while heap and heap[0][0] <= new:
            end, aid, since = heappop(heap)
            f = self.facts.get(aid)
            if f is None or f["since"] != since or f["state"] not in _FIELD_BY_STATE:
                continue  # a later state, or forgotten
            group = self._group(f)
            self._credit_group(group, max(since, f["cred"] or since, old), end, 1)
            self._untrack(aid, group)
            self._count_present(f["state"], group[2], -1)
            f["state"] = _LOGGED_OUT
            self.dirty_facts.add(aid)

    def _rebuild_expiry(self) -> None:
        """The expiry heap from the facts: one entry per agent in a timed state. Each state change
        adds an entry and leaves the one before in the heap until it would expire, a day later:
        rebuilt when they are the majority, so its size stays within twice the agents known."""
        timeout = self.p.agent_state_timeout
        self.expiry = [
            (f["since"] + timeout, aid, f["since"])
            for aid, f in self.facts.items()
            if f["state"] in _FIELD_BY_STATE and f["since"] is not None
        ]
        heapify(self.expiry)

    def _on_close_replaying(self, old: int, new: int) -> None:
        """After a restart, agents whose facts already include later records are skipped: one
        by one, as the facts say (rare: only until the replay has caught up)."""
        timeout = self.p.agent_state_timeout
        for aid in sorted(self.facts):
            f = self.facts[aid]
            if f["state"] in (None, _LOGGED_OUT) or f["since"] >= new:
                continue
            if self.guard_facts.get(aid, -1) >= self.cur:
                continue
            since = f["since"]
            self._credit(f, max(since, f["cred"] or since, old), min(new, since + timeout))
            f["cred"] = new
            if since + timeout <= new:
                f["state"] = _LOGGED_OUT
            self.dirty_facts.add(aid)
        self._regroup(new)


class TicketsSource(Source):
    """Tickets: volumes, response and resolution percentiles, SLA breach, backlog, reopens."""

    family = "tickets"

    def entity_key(self, e: TicketEvent) -> str:
        return e.ticket_id

    def new_facts(self, e: TicketEvent) -> dict[str, Any]:
        return {
            "seen": {},
            "last": e.ts.timestamp(),
            "open": False,
            "fr": False,
            "dims": list(self._event_cell(e)[0]),
        }

    def _event_cell(self, e: TicketEvent) -> tuple[tuple[str, ...], str]:
        return self.cell((("queue", e.team), ("channel", e.channel._value_), ("business_type", e.business_type)))

    def may_forget(self, f: dict[str, Any]) -> bool:
        return not f["open"]

    def _backlog(self, f: dict[str, Any], w: OpenWindow | None, ts: float, delta: int) -> None:
        if w is not None:
            w.part(cellkey(f["dims"]), self.n).add_level("backlog", int(ts) - w.start, delta)

    def apply(self, e: TicketEvent, ts: float, f: dict[str, Any]) -> None:
        w = self.window(ts)
        dims, cell = self._event_cell(e)
        p = w.part(cell, self.n) if w is not None else None
        kind = e.kind
        if kind is TicketEventKind.created:
            if p is not None:
                p.tickets_created += 1
                if e.customer_id:
                    w.firsts.append(["ticket", self.pseudo.token(e.customer_id), ts, e.ticket_id, e.category, dims])
            if not f["open"]:
                f["open"] = True
                self._backlog(f, w, ts, +1)
        elif kind is TicketEventKind.first_response:
            if not f["fr"]:
                f["fr"] = True
                if p is not None:
                    p.tickets_first_responses += 1
                    p.add_sketch("frt", ts - e.created_at.timestamp())
        elif kind is TicketEventKind.resolved:
            if p is not None:
                p.tickets_resolved += 1
                p.add_sketch("resolution", ts - e.created_at.timestamp())
                if e.sla_due is not None:
                    p.sla_evaluated += 1
                    p.sla_breached += e.ts > e.sla_due
            if f["open"]:
                f["open"] = False
                self._backlog(f, w, ts, -1)
        elif kind is TicketEventKind.reopened:
            if p is not None:
                p.tickets_reopened += 1
            if not f["open"]:
                f["open"] = True
                self._backlog(f, w, ts, +1)
        elif kind is TicketEventKind.closed:
            if p is not None:
                p.tickets_closed += 1
            if f["open"]:
                f["open"] = False
                self._backlog(f, w, ts, -1)


class SurveysSource(Source):
    """Survey responses: CSAT, NPS, CES, and CSAT by the rated contact's wait.

    The wait join reads the contact's facts in the calls source of the same partition number
    (producers key surveys by the rated contact id, so both land there). A survey window is
    emitted only once the calls source has closed it too: by then every non-late answer
    before the window's end is known, so the join gives the same answer however the two
    topics interleave.
    """

    family = "surveys"

    def entity_key(self, e: SurveyEvent) -> str:
        return e.rated_id

    def apply(self, e: SurveyEvent, ts: float, f: dict[str, Any]) -> None:
        w = self.window(ts)
        if w is None:
            return
        channel = e.channel._value_ if e.channel else None
        dims, cell = self.cell((("queue", e.queue), ("channel", channel), ("business_type", e.business_type)))
        parts = [w.part(cell, self.n)]
        if e.agent_id:  # the agent apart from the cell, as for calls: (cell, agent) pairs would multiply
            agent = dimkey("agent", e.agent_id)
            parts.append(w.part(agent, self.n))
            dims = (*dims, agent)
        for p in parts:
            p.survey_responses += 1
            if e.csat is not None:
                p.csat_n += 1
                p.csat_sum += e.csat
                p.csat_top2 += e.csat >= 4
            if e.nps is not None:
                p.nps_n += 1
                p.promoters += e.nps >= 9
                p.detractors += e.nps <= 6
            if e.ces is not None:
                p.ces_n += 1
                p.ces_sum += e.ces
        if e.csat is not None:
            w.pending.append([e.contact_id, e.csat, dims])

    def _calls(self) -> Source | None:
        return self.shard.get("calls")

    def emit_target(self) -> int:
        calls = self._calls()
        own = self.closed
        if calls is None or calls.emitted is None:
            return self.emitted if self.emitted is not None else own  # type: ignore[return-value]
        return min(own, calls.emitted)  # type: ignore[type-var]

    def settle(self) -> None:
        if self.closed is not None:
            self.emit_until(self.emit_target())

    def finish_window(self, w: OpenWindow) -> None:
        calls = self._calls()
        end = w.start + self.p.base
        for contact_id, csat, dims in w.pending:
            wait = None
            if calls is not None and contact_id is not None:
                cf = calls.facts.get(contact_id)
                if cf is not None and cf["ans_ts"] is not None and cf["ans_ts"] < end:
                    wait = cf["wait"]
            bucket = wait_bucket(wait)
            if dims[-1].startswith(_AGENT):  # the rated agent's own partial, the rest one cell
                w.part(dims[-1], self.n).add_csat_wait(bucket, csat)
                dims = dims[:-1]
            w.part(cellkey(dims), self.n).add_csat_wait(bucket, csat)
        w.pending = []


SOURCE_TYPES: dict[str, type[Source]] = {
    "calls": CallsSource,
    "tickets": TicketsSource,
    "surveys": SurveysSource,
    "agents": AgentsSource,
}
