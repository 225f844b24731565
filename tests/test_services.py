"""The real-service harness itself: each service starts for real and answers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from clickhouse_driver import Client

from tests.services import ClickHouseServer


def test_kafka_broker_answers_metadata(kafka: Any) -> None:
    async def topics() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    assert isinstance(asyncio.run(topics()), set)


def test_clickhouse_server_runs_queries(clickhouse_server: ClickHouseServer) -> None:
    client = Client(host="127.0.0.1", port=clickhouse_server.tcp_port)
    version = client.execute("SELECT version()")[0][0]
    assert version.split(".")[0].isdigit()
    client.execute("CREATE TABLE IF NOT EXISTS smoke (x UInt32) ENGINE = MergeTree ORDER BY x")
    client.execute("INSERT INTO smoke (x) VALUES", [(i,) for i in range(1000)])
    assert client.execute("SELECT sum(x) FROM smoke")[0][0] == 499_500


def test_chdb_runs_the_same_sql_in_process(chdb_path: Path) -> None:
    from chdb import session

    s = session.Session(str(chdb_path))
    s.query("CREATE TABLE IF NOT EXISTS smoke (x UInt32) ENGINE = MergeTree ORDER BY x")
    s.query("INSERT INTO smoke SELECT number FROM numbers(1000)")
    assert s.query("SELECT sum(x) FROM smoke", "CSV").data().strip() == "499500"
    s.close()
