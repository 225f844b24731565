"""The KPI engine composed without Kafka: stage 1 sources -> stage 2 merger -> records.

The Faust app wires the same pieces through topics and tables; this in-process form serves
property tests, the engine benchmark and anyone embedding callpulse's logic.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from schemas.records import KpiRecord
from streams.engine import KpiEngine
from streams.kpis import kpi_record
from streams.merge import FinalWindow, MergeParams, WindowMerger
from streams.reference import FAMILIES, Arrival
from streams.sources import EngineParams


def expected_sources(topics: dict[str, str], partitions: int) -> set[str]:
    return {f"{topic}:{p}" for topic in topics.values() for p in range(partitions)}


def final_record(fw: FinalWindow, thresholds: tuple[int, ...], variant: str) -> KpiRecord:
    dim, value = fw.dimension
    return kpi_record(fw.partial, fw.size, fw.start, dim, value, thresholds, variant)


class LocalPipeline:
    def __init__(
        self,
        params: EngineParams,
        merge: MergeParams,
        partitions: int,
        variant: str = "answered_abandoned_no_short",
        topics: dict[str, str] | None = None,
    ) -> None:
        self.topics = topics or {f: f"cc.{f}" for f in FAMILIES}
        self.engine = KpiEngine(params, self.topics)
        self.merger = WindowMerger(merge, expected_sources(self.topics, partitions))
        self.thresholds = params.thresholds
        self.variant = variant
        self.offsets: dict[tuple[str, int], int] = {}
        self.records: list[KpiRecord] = []
        self.late = 0
        self.duplicates = 0

    def feed(self, arrivals: Iterable[Arrival], batch: int = 500) -> None:
        for n, a in enumerate(arrivals, start=1):
            topic = self.topics[a.family]
            off = self.offsets.get((topic, a.partition), -1) + 1
            self.offsets[(topic, a.partition)] = off
            if a.event is None:
                self.engine.watermark(topic, a.partition, off, a.watermark)  # type: ignore[arg-type]
            else:
                out = self.engine.record(topic, a.partition, off, [a.event])
                self.late += len(out.late)
                self.duplicates += out.duplicates
            if n % batch == 0:
                self.flush()
        self.flush()

    def flush(self) -> list[dict[str, Any]]:
        self.engine.settle()
        drained = self.engine.drain()
        self.deliver(drained.messages)
        for fw in self.merger.finalize():
            self.records.append(final_record(fw, self.thresholds, self.variant))
        if self.merger.s.next_window is not None:
            self.merger.prune_history(self.merger.s.next_window)
        self.persist(self.merger.drain_state())
        return drained.messages

    def deliver(self, messages: list[dict[str, Any]]) -> None:
        """Stage 1's messages of a batch to stage 2 (the worker sends them through Kafka)."""
        for msg in messages:
            self.merger.on_message(msg)

    def persist(self, merge_state: dict[str, Any]) -> None:
        """The merge stage's changed state entries after a batch: the worker writes them to its
        changelog; in process they are dropped (tests override this to restart from them)."""
