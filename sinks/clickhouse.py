"""``ClickHouseSink``: batched, retried, idempotent inserts into the BI store.

* One insert per table per batch (the caller batches: thousands of rows, about one insert per
  second; never a row at a time), split into chunks of at most ``sink_batch_rows``.
* An insert that fails is retried with exponential backoff (capped) until ClickHouse takes it.
  The caller awaits the retry loop, so the Kafka offsets of the batch are not committed and
  consumption pauses (Faust's bounded buffers fill, then fetching stops): memory stays bounded
  and nothing is lost while the server is down.
* Each chunk carries a deterministic ``insert_deduplication_token`` (table, partitions and
  offset ranges, chunk number), so a retry whose first attempt did land is dropped by the server
  (servers >= 22.3). Everything else is idempotent by key: every table is a ReplacingMergeTree
  whose sorting key identifies the event / window / warning change.

All ClickHouse calls run on one dedicated thread (clickhouse-driver and chdb are blocking).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from callpulse.config import Settings
from sinks.clickhouse_client import ClickHouseClient, connect
from sinks.metrics import SinkMetrics
from sinks.schema import migrate

log = logging.getLogger("callpulse.sink")

#: (partition, first offset, last offset) of the Kafka records behind a batch
Span = tuple[int, int, int]


def dedup_token(table: str, spans: Sequence[Span], chunk: int) -> str:
    """Same batch (same offsets) -> same token, on every retry and every worker."""
    text = f"{table}|{sorted(spans)}|{chunk}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def spans_of(positions: Sequence[tuple[int, int]]) -> list[Span]:
    """Offset range per partition of (partition, offset) pairs."""
    lo: dict[int, int] = {}
    hi: dict[int, int] = {}
    for p, off in positions:
        lo[p] = min(lo.get(p, off), off)
        hi[p] = max(hi.get(p, off), off)
    return [(p, lo[p], hi[p]) for p in sorted(lo)]


class ClickHouseSink:
    def __init__(self, settings: Settings, metrics: SinkMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or SinkMetrics()
        self.database = settings.clickhouse_database
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="clickhouse")
        self._client: ClickHouseClient | None = None
        self._ready = asyncio.Event()
        self._inserts = 0

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _connect_and_migrate(self) -> list[str]:
        if self._client is None:
            self._client = connect(self.settings)
        return migrate(self._client, self.database, self.settings.raw_retention_days)

    async def start(self) -> None:
        """Connect and apply migrations, retrying until ClickHouse is reachable."""
        delay = 0.5
        while True:
            try:
                applied = await self._call(self._connect_and_migrate)
                assert self._client is not None
                log.info("ClickHouse: %s, migrations applied: %s", self._client.description, applied or "none")
                self._ready.set()
                return
            except Exception as exc:
                log.warning("ClickHouse not ready (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.sink_max_backoff_s)

    async def write(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], spans: list[Span]) -> None:
        """Insert ``rows`` into ``table``; returns only when ClickHouse has acknowledged all."""
        if not rows:
            return
        await self._ready.wait()
        size = self.settings.sink_batch_rows
        for chunk, i in enumerate(range(0, len(rows), size)):
            await self._insert(table, columns, rows[i : i + size], dedup_token(table, spans, chunk))

    async def _insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], token: str) -> None:
        assert self._client is not None
        qualified = f"{self.database}.{table}"
        delay = 0.5
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                await self._call(self._client.insert, qualified, columns, rows, token)
                break
            except Exception as exc:
                self.metrics.errors.labels(table).inc()
                self.metrics.failing.set(1)
                log.warning(
                    "insert of %d rows into %s failed (attempt %d): %s; retrying in %.1fs (consumption paused)",
                    len(rows),
                    table,
                    attempt,
                    str(exc).splitlines()[0][:300],
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.sink_max_backoff_s)
        self.metrics.failing.set(0)
        self.metrics.insert_seconds.labels(table).observe(time.perf_counter() - started)
        self.metrics.rows.labels(table).inc(len(rows))
        self.metrics.last_success.labels(table).set(time.time())
        if attempt > 1:
            log.info("insert into %s succeeded after %d attempts", table, attempt)
        self._inserts += 1
        kill_after = self.settings.test_kill_after_inserts
        if kill_after is not None and self._inserts >= kill_after:
            # Fault injection (tests): die after ClickHouse acknowledged, before Kafka commits.
            log.warning("test_kill_after_inserts=%d reached: SIGKILL before the offset commit", kill_after)
            os.kill(os.getpid(), signal.SIGKILL)

    async def close(self) -> None:
        if self._client is not None:
            await self._call(self._client.close)
        self._executor.shutdown(wait=True)
