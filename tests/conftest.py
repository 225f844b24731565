"""Session-wide real services and per-test isolated pipelines (own topics, own consumer group)."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from callpulse.config import Settings, Topics
from schemas.records import KpiRecord
from streams.kafka import client_kwargs, ensure_topics
from tests.services import ClickHouseServer, WorkerProcess, start_kafka, tmpdir

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
_counter = itertools.count()


@pytest.fixture(scope="session")
def logs_dir() -> Path:
    d = tmpdir("callpulse-test-logs-")
    print(f"\nservice and worker logs: {d}")
    return d


@pytest.fixture(scope="session")
def kafka(logs_dir: Path) -> Iterator[Any]:
    broker = start_kafka(logs_dir)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def clickhouse_server() -> Iterator[ClickHouseServer]:
    server = ClickHouseServer(tmpdir("callpulse-ch-")).start()
    yield server
    server.stop()


@pytest.fixture()
def chdb_path(tmp_path: Path) -> Path:
    return tmp_path / "chdb"


class Pipeline:
    """One isolated callpulse deployment on the shared broker: its own topics and group."""

    def __init__(self, bootstrap: str, logs: Path, **overrides: Any) -> None:
        n = next(_counter)
        prefix = f"t{os.getpid()}-{n}"
        self.topics = Topics(**{name: f"{prefix}.{value}" for name, value in Topics().model_dump().items()})
        self.settings = Settings(
            kafka_bootstrap=bootstrap,
            topics=self.topics,
            app_id=f"callpulse-{prefix}",
            metrics_port=0,
            **overrides,
        )
        self.logs = logs
        self.workers: list[WorkerProcess] = []
        asyncio.run(ensure_topics(self.settings))

    def env(self) -> dict[str, str]:
        s = self.settings
        env = {
            "CALLPULSE_KAFKA_BOOTSTRAP": s.bootstrap(),
            "CALLPULSE_APP_ID": s.app_id,
            "CALLPULSE_METRICS_PORT": "0",
            "CALLPULSE_PARTITIONS": str(s.partitions),
            "CALLPULSE_GRACE_S": str(s.grace_s),
            "CALLPULSE_IDLE_TIMEOUT_S": str(s.idle_timeout_s),
            "CALLPULSE_MAX_FUTURE_SKEW_S": str(s.max_future_skew_s),
            "CALLPULSE_BATCH_MAX": str(s.batch_max),
        }
        for name, value in self.topics.model_dump().items():
            env[f"CALLPULSE_TOPICS__{name.upper()}"] = value
        return env

    def start_worker(self, **env: str) -> WorkerProcess:
        log = self.logs / f"{self.settings.app_id}-w{len(self.workers)}.log"
        w = WorkerProcess({**self.env(), **env}, log).start()
        self.workers.append(w)
        return w

    def start_sink(self, **env: str) -> WorkerProcess:
        """A ``callpulse sink`` for this pipeline; ``env``: its ClickHouse settings."""
        full = {**self.env(), "CALLPULSE_SINK_FLUSH_INTERVAL_S": "0.5", **env}
        log = self.logs / f"{self.settings.app_id}-sink{len(self.workers)}.log"
        w = WorkerProcess(full, log, command="sink").start()
        self.workers.append(w)
        return w

    def stop(self) -> None:
        for w in self.workers:
            w.stop()

    async def read(self, topic: str, idle_s: float = 3.0, max_wait_s: float = 180.0, until: Any = None) -> list[Any]:
        """Read a topic from the start until ``until(records)`` holds and nothing new came for
        ``idle_s``. Waits on data, not on end offsets (Tansu reports them short)."""
        consumer = AIOKafkaConsumer(topic, **client_kwargs(self.settings), auto_offset_reset="earliest")
        await consumer.start()
        out: list[Any] = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        last_new = start
        try:
            while loop.time() - start < max_wait_s:
                batch = await consumer.getmany(timeout_ms=500)
                if batch:
                    for records in batch.values():
                        out.extend(records)
                    last_new = loop.time()
                elif loop.time() - last_new >= idle_s and (until is None or until(out)):
                    break
        finally:
            await consumer.stop()
        return out

    def kpis(self, until: Any = None, max_wait_s: float = 240.0) -> dict[str, KpiRecord]:
        """Final KPI records, latest per key (cc.kpis is a keyed upsert stream)."""
        records = asyncio.run(self.read(self.topics.kpis, until=until, max_wait_s=max_wait_s))
        out: dict[str, KpiRecord] = {}
        for r in records:
            rec = KpiRecord.model_validate_json(r.value)
            out[rec.key()] = rec
        return out


@pytest.fixture()
def pipeline_factory(kafka: Any, logs_dir: Path) -> Iterator[Any]:
    made: list[Pipeline] = []

    def make(**overrides: Any) -> Pipeline:
        p = Pipeline(kafka.bootstrap, logs_dir, **overrides)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()
