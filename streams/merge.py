"""Stage 2 of the KPI engine: add up the sources' partial windows and emit final records.

A base window is final when every source (every input topic partition) has closed it: the
slowest partition decides, and an idle partition moves on by its heartbeat. Final base windows
are then

* placed in each level's cumulative series (contacts waiting, in progress, open tickets), so
  a quiet window still shows the backlog it inherited;
* zero-filled for every dimension value seen before: silence is data;
* checked for repeat contacts (same pseudonymised customer within the horizon) and repeat
  complaints (same customer and category), which need all partitions at once;
* rolled up into the longer window sizes.

Every state change is idempotent (set semantics keyed by source and window), so replaying
partial messages after a crash yields the same records.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from streams.partial import KpiPartial
from streams.sources import CELL_SEP, split_cell, split_dimkey
from streams.windows import floor_to


@dataclass(frozen=True)
class MergeParams:
    base: int
    sizes: tuple[int, ...]
    thresholds: tuple[int, ...]
    repeat_horizon: int = 86_400
    complaint_horizon: int = 7 * 86_400
    agent_sizes: tuple[int, ...] | None = None  # window sizes with per-agent records; None = all
    zero_fill_horizon: int = 7 * 86_400  # a value is zero-filled this long after its last data

    def agents_in(self, size: int) -> bool:
        return self.agent_sizes is None or size in self.agent_sizes

    @classmethod
    def from_settings(cls, s: Any) -> MergeParams:
        return cls(
            base=s.base_window_s,
            sizes=tuple(s.window_sizes_s),
            thresholds=tuple(s.sl_thresholds_s),
            repeat_horizon=s.repeat_horizon_s,
            complaint_horizon=s.repeat_complaint_horizon_s,
            agent_sizes=tuple(s.agent_window_sizes_s),
            zero_fill_horizon=s.zero_fill_horizon_s,
        )


@dataclass
class FinalWindow:
    size: int
    start: int
    dimkey: str
    partial: KpiPartial

    @property
    def dimension(self) -> tuple[str, str]:
        return split_dimkey(self.dimkey)


@dataclass
class MergeState:
    closed: dict[str, int] = field(default_factory=dict)
    pending: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    next_window: int | None = None
    levels: dict[str, dict[str, int]] = field(default_factory=dict)  # after next_window - base
    # the values zero-filled (all but agents): dimkey -> last base window with data, kept while
    # within the zero-fill horizon (earlier versions kept every value ever seen, agents too)
    known: dict[str, int] = field(default_factory=dict)
    rollups: dict[str, dict[str, Any]] = field(default_factory=dict)  # "size|start" -> acc
    finals: set[int] = field(default_factory=set)  # base windows persisted for open rollups
    history: dict[str, list[list[Any]]] = field(default_factory=dict)  # "kind|key" -> [[ts, id]]


class WindowMerger:
    """Stage-2 merger for one set of expected sources."""

    def __init__(self, params: MergeParams, expected_sources: set[str]) -> None:
        self.p = params
        self.expected = set(expected_sources)
        self.s = MergeState()
        self.n = len(params.thresholds)
        self._dirty: set[str] = set()
        # pending messages whose value is in the table: a message that arrives and is finalized
        # between two drains (most of them in a catch-up) was never written, so it needs no
        # tombstone either (they were about two thirds of the merge changelog)
        self._stored: set[str] = set()
        self._fresh: dict[int, dict[str, KpiPartial]] = {}  # finalized since the last drain
        self._legacy: set[str] = set()  # accumulator entries of earlier versions, to delete
        # ``next_window`` as of the last drain (or load): the first window a restart could
        # finalize again, its meta not yet durable
        self._drained_upto: int | None = None

    # -- input ---------------------------------------------------------------------------------
    def on_message(self, msg: dict[str, Any]) -> None:
        source = msg["source"]
        if "window" in msg:
            window = msg["window"]
            if self.s.next_window is None or window >= self.s.next_window:
                self.s.pending.setdefault(window, {})[source] = msg
                self._dirty.add(f"pend|{window}|{source}")
        closed = msg["closed"]
        if closed > self.s.closed.get(source, -(2**62)):
            self.s.closed[source] = closed

    def watermark(self) -> int | None:
        """Every base window ending at or before this is closed by every source."""
        if not self.expected or any(s not in self.s.closed for s in self.expected):
            return None
        return min(self.s.closed[s] for s in self.expected)

    # -- output --------------------------------------------------------------------------------
    def finalize(self) -> list[FinalWindow]:
        """Emit every window that became final, in window order."""
        mark = self.watermark()
        out: list[FinalWindow] = []
        if mark is None:
            return out
        if self.s.next_window is None:
            # Only once the earliest pending window is final can no earlier one still arrive.
            if not self.s.pending or min(self.s.pending) + self.p.base > mark:
                return out
            self.s.next_window = min(self.s.pending)
        while self.s.next_window + self.p.base <= mark:
            if not self.s.known and not self.s.rollups and self.s.next_window not in self.s.pending:
                # Nothing to zero-fill and no longer window open: the windows up to the next one
                # with data (or the watermark) would give no record. Skipped in one step, so a
                # jump of stream time costs the zero-fill horizon, not the whole gap, window by
                # window (an event months early opening a partition took minutes).
                self.s.next_window = min(min(self.s.pending, default=mark), mark)
                continue
            out.extend(self._finalize_one(self.s.next_window))
            self.s.next_window += self.p.base
        return out

    def _finalize_one(self, start: int) -> list[FinalWindow]:
        msgs = self.s.pending.pop(start, {})
        self._dirty.update(f"pend|{start}|{source}" for source in msgs)
        merged: dict[str, KpiPartial] = {}  # by the key sent: a dimension, or a cell of several
        firsts: list[list[Any]] = []
        for source in sorted(msgs):
            msg = msgs[source]
            for key, data in msg.get("parts", {}).items():
                part = merged.get(key)
                if part is None:
                    merged[key] = KpiPartial.from_dict(data, self.n)
                else:
                    part.merge_state(data)
            firsts.extend(msg.get("firsts", []))
        merged = _by_dimension(merged)
        # Silence is data, for a while: a value is zero-filled in every window up to the horizon
        # after its last data, then forgotten (a queue taken out of service, a value sent by
        # mistake) until it has data again. Agents are never zero-filled.
        known = self.s.known
        for key in merged:
            if not key.startswith("agent\t"):
                known[key] = start
        horizon = self.p.zero_fill_horizon
        expired = [key for key, last in known.items() if start - last >= horizon]
        for key in expired:
            del known[key]
        for key in known:
            if key not in merged:
                merged[key] = KpiPartial(self.n)
        for key, part in merged.items():
            ends = part.resolve_levels(self.s.levels.get(key, {}))
            if any(ends.values()) or key in self.s.levels:
                self.s.levels[key] = ends
        self._repeats(firsts, merged)
        self._fresh[start] = merged
        agents = self.p.agents_in(self.p.base)
        out = [
            FinalWindow(self.p.base, start, key, merged[key])
            for key in sorted(merged)
            if agents or not key.startswith("agent\t")
        ]
        out.extend(self._rollup(start, merged))
        return out

    def _repeats(self, firsts: list[list[Any]], merged: dict[str, KpiPartial]) -> None:
        """A first contact (or ticket) is a repeat when the same customer (and category) had an
        earlier one within the horizon; order is (event time, entity id)."""
        for kind, token, ts, entity, category, dims in sorted(firsts, key=lambda f: (f[2], f[3], f[0])):
            if not token:
                continue
            horizon = self.p.repeat_horizon if kind == "contact" else self.p.complaint_horizon
            hkey = f"{kind}|{token}|{category}"
            self._dirty.add(f"hist|{hkey}")
            # ``seen`` is in (event time, id) order: windows finalize in order and firsts are
            # sorted within one. So the earliest entry decides "an earlier one exists", and
            # expiry cuts a prefix: O(log n) per contact even for a caller id shared by
            # thousands of contacts; ``drain_state`` keeps only the entries that can still
            # decide (``_keep_deciding``).
            seen = self.s.history.setdefault(hkey, [])
            if seen and seen[0][0] < ts - horizon:
                del seen[: bisect_left(seen, ts - horizon, key=lambda h: h[0])]
            repeat = bool(seen) and (seen[0][0], seen[0][1]) < (ts, entity)
            # in order, once: a window finalized again after a restart finds its entries here
            entry = [ts, entity]
            at = bisect_left(seen, entry)
            if at == len(seen) or seen[at] != entry:
                seen.insert(at, entry)
            if repeat:
                field_name = "repeat_contacts" if kind == "contact" else "repeat_complaints"
                for key in dims:
                    part = merged.get(key)
                    if part is not None:
                        setattr(part, field_name, getattr(part, field_name) + 1)

    def _rollup(self, start: int, merged: dict[str, KpiPartial]) -> list[FinalWindow]:
        out: list[FinalWindow] = []
        for size in self.p.sizes:
            if size == self.p.base:
                continue
            big = floor_to(start, size)
            rkey = f"{size}|{big}"
            acc = self._include(rkey, start, merged, size)
            if start + self.p.base == big + size:
                del self.s.rollups[rkey]
                if rkey in self._legacy:
                    self._dirty.add(f"roll|{rkey}")
                out.extend(FinalWindow(size, big, key, acc["parts"][key]) for key in sorted(acc["parts"]))
        return out

    def _include(self, rkey: str, start: int, merged: dict[str, KpiPartial], size: int) -> dict[str, Any]:
        """Add a final base window to the accumulator of a longer window (once)."""
        acc = self.s.rollups.setdefault(rkey, {"included": [], "parts": {}})
        if start not in acc["included"]:
            acc["included"].append(start)
            agents = self.p.agents_in(size)
            for key, part in merged.items():
                if not agents and key.startswith("agent\t"):
                    continue
                mine = acc["parts"].get(key)
                acc["parts"][key] = part.copy() if mine is None else mine.merge_sequential(part)
        return acc

    def _rolled_up(self, start: int, upto: int) -> bool:
        """Whether every longer window containing base window ``start`` is out (all end by ``upto``)."""
        return all(floor_to(start, size) + size <= upto for size in self.p.sizes)

    def prune_history(self, now_ts: float) -> None:
        """Forget customers outside every horizon."""
        horizon = max(self.p.repeat_horizon, self.p.complaint_horizon)
        for key in [k for k, v in self.s.history.items() if not v or v[-1][0] < now_ts - horizon]:
            del self.s.history[key]
            self._dirty.add(f"hist|{key}")

    # -- persistence: one table entry per pending message, final base window, customer, a meta --
    def drain_state(self) -> dict[str, dict[str, Any] | None]:
        """Entries changed since the last drain (None = delete).

        Longer windows in progress are not written as accumulators (that rewrote a growing
        union of every dimension each batch): each final base window is written once
        (``fin|start``) and deleted when every longer window containing it is out; a restart
        rebuilds the accumulators from them."""
        out: dict[str, dict[str, Any] | None] = {}
        fresh, self._fresh = self._fresh, {}
        upto = self.s.next_window
        for start, merged in fresh.items():
            if upto is not None and self._rolled_up(start, upto):
                continue  # every longer window containing it is out already: never needed
            out[f"fin|{start}"] = {key: part.to_dict() for key, part in merged.items()}
            self.s.finals.add(start)
        if upto is not None:
            for start in [w for w in self.s.finals if self._rolled_up(w, upto)]:
                self.s.finals.discard(start)
                out[f"fin|{start}"] = None
        for key in self._dirty:
            kind, _, rest = key.partition("|")
            if kind == "pend":
                w, _, source = rest.partition("|")
                msg = self.s.pending.get(int(w), {}).get(source)
                if msg is not None:
                    out[key] = msg
                    self._stored.add(key)
                elif key in self._stored:
                    out[key] = None
                    self._stored.discard(key)
            elif kind == "roll":
                acc = self.s.rollups.get(rest)
                out[key] = (
                    None
                    if acc is None
                    else {"included": acc["included"], "parts": {d: p.to_dict() for d, p in acc["parts"].items()}}
                )
            elif kind == "hist":
                seen = self.s.history.get(rest)
                if seen:
                    self._keep_deciding(seen, self._drained_upto)
                out[key] = {"seen": list(seen)} if seen else None  # a copy: ``seen`` changes in place
        self._dirty = set()
        self._drained_upto = upto
        # copies: the table keeps the value, and these change in place before the next drain
        out["meta"] = {
            "closed": dict(self.s.closed),
            "next_window": self.s.next_window,
            "levels": dict(self.s.levels),  # each dimension's levels are replaced, not changed
            "last_data": dict(self.s.known),
        }
        return out

    @staticmethod
    def _keep_deciding(seen: list[list[Any]], upto: int | None) -> None:
        """Cut a customer's history to the entries that can still decide a repeat: those of
        windows from ``upto`` on (the windows final since the last drain, which a restart before
        this drain's meta is durable finalizes again, asking about each of them), and the latest
        one before them. Every later question is about a contact after all of these, and "an
        earlier one within the horizon" holds exactly when the latest earlier one is within it.
        A history once grew by every contact of its horizon (7 days for complaints) and was
        rewritten whole at each contact: a caller id shared by thousands of contacts (a
        withheld or switchboard number) rewrote hundreds of kilobytes per batch."""
        if upto is None:
            return
        cut = bisect_left(seen, upto, key=lambda h: h[0]) - 1
        if cut > 0:
            del seen[:cut]

    @staticmethod
    def persist_groups(drained: dict[str, Any]) -> list[dict[str, Any]]:
        """``drain_state``'s entries in the order they must become durable, each group after the
        previous one: new values (pending partials, final base windows, history), then the meta
        (which declares windows final), then the deletions the meta makes safe (pending partials
        of windows now final, final base windows rolled up, expired history). Deleted before the
        meta, a crash in between left a window not final whose partials were gone: it was
        finalized again without them (``tests/test_kpi_engine.py``)."""
        values = {k: v for k, v in drained.items() if k != "meta" and v is not None}
        gone = {k: v for k, v in drained.items() if v is None}
        return [values, {"meta": drained["meta"]}, gone]

    def load_state(self, items: Any) -> None:
        self.s = MergeState()
        self._fresh, self._legacy, self._stored = {}, set(), set()
        finals: dict[int, dict[str, Any]] = {}
        for key, value in items:
            if value is None:
                continue
            kind, _, rest = key.partition("|")
            if key == "meta":
                self.s.closed = dict(value["closed"])
                self.s.next_window = value["next_window"]
                self.s.levels = {k: dict(v) for k, v in value["levels"].items()}
                if "last_data" in value:
                    self.s.known = dict(value["last_data"])
                else:  # an earlier version's: every value ever seen, agents too, with its first
                    # window; taken as having data in the last final window, so none stops being
                    # zero-filled on upgrade before a horizon without data
                    last = (value["next_window"] or 0) - self.p.base
                    self.s.known = {k: max(w, last) for k, w in value["known"].items() if not k.startswith("agent\t")}
            elif kind == "pend":
                w, _, source = rest.partition("|")
                self.s.pending.setdefault(int(w), {})[source] = value
                self._stored.add(key)
            elif kind == "fin":
                finals[int(rest)] = value
            elif kind == "roll":  # an accumulator written by earlier versions
                self._legacy.add(rest)
                self.s.rollups[rest] = {
                    "included": list(value["included"]),
                    "parts": {d: KpiPartial.from_dict(p, self.n) for d, p in value["parts"].items()},
                }
            elif kind == "hist":
                self.s.history[rest] = [list(h) for h in value["seen"]]
        if self.s.next_window is not None:
            done = [w for w in self.s.pending if w < self.s.next_window]
            for w in done:  # final before a crash that came before their deletion: delete now
                self._dirty.update(f"pend|{w}|{source}" for source in self.s.pending.pop(w))
        upto = self.s.next_window
        for start in sorted(finals):
            if upto is None or start >= upto:
                continue  # finalized again after this restart, and written again
            self.s.finals.add(start)
            merged = {key: KpiPartial.from_dict(data, self.n) for key, data in finals[start].items()}
            for size in self.p.sizes:
                big = floor_to(start, size)
                if size != self.p.base and big + size > upto:
                    self._include(f"{size}|{big}", start, merged, size)
        self._drained_upto = upto


def _by_dimension(merged: dict[str, KpiPartial]) -> dict[str, KpiPartial]:
    """A window's partials added up over the sources, with each cell (the partial of several
    dimensions at once, ``streams.sources.cellkey``) added into each of its dimensions, in cell
    order: once per window and cell, where a source adding into each dimension did it per event."""
    cells = sorted([key for key in merged if CELL_SEP in key])
    for key in cells:
        part = merged.pop(key)
        dims = split_cell(key)
        last = len(dims) - 1
        for i, dim in enumerate(dims):
            mine = merged.get(dim)
            if mine is None:
                merged[dim] = part if i == last else part.copy()  # the cell's own, at its last use
            else:
                mine.merge(part)
    return merged


__all__ = ["FinalWindow", "MergeParams", "WindowMerger"]
