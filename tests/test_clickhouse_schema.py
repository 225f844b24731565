"""Migrations on the real ClickHouse server (18.16) and on chdb (current engine): idempotent,
tracked, refusing an edited migration, and producing exactly the columns the sink writes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sinks.clickhouse_client import ChdbClient, ClickHouseClient, NativeClient, ServerFeatures
from sinks.rows import (
    AGENT_COLUMNS,
    CALL_COLUMNS,
    KPI_COLUMNS,
    STAFFING_COLUMNS,
    SURVEY_COLUMNS,
    TICKET_COLUMNS,
    WARNING_COLUMNS,
)
from sinks.schema import load_migrations, migrate
from tests.services import ClickHouseServer

WRITTEN = {
    "call_events": CALL_COLUMNS,
    "ticket_events": TICKET_COLUMNS,
    "survey_responses": SURVEY_COLUMNS,
    "agent_state_events": AGENT_COLUMNS,
    "kpi_window": KPI_COLUMNS,
    "warnings": WARNING_COLUMNS,
    "staffing_interval": STAFFING_COLUMNS,
}


@pytest.fixture(params=["server", "chdb"])
def client(request: Any, clickhouse_server: ClickHouseServer, tmp_path: Path) -> Iterator[ClickHouseClient]:
    c: ClickHouseClient = (
        NativeClient(clickhouse_server.dsn) if request.param == "server" else ChdbClient(tmp_path / "chdb")
    )
    yield c
    c.close()


def test_migrate_is_idempotent_and_tracked(client: ClickHouseClient, request: Any) -> None:
    db = f"mig_{request.node.callspec.id}"
    applied = migrate(client, db, retention_days=30)
    assert applied == [f"{m.version:04d}_{m.name}" for m in load_migrations()]
    assert migrate(client, db, retention_days=30) == []
    assert int(client.execute(f"SELECT count() FROM {db}.schema_migrations").scalar()) == len(applied)
    for table, columns in WRITTEN.items():
        have = [
            r[0]
            for r in client.execute(
                f"SELECT name FROM system.columns WHERE database = '{db}' AND table = '{table}'"
            ).rows
        ]
        assert sorted(have) == sorted(columns), table
    views = {
        r[0] for r in client.execute(f"SELECT name FROM system.tables WHERE database = '{db}' AND engine = 'View'").rows
    }
    assert {"kpi_hourly", "kpi_daily", "agent_scorecard", "ticket_aging"} <= views
    ts_type = client.execute(
        f"SELECT type FROM system.columns WHERE database = '{db}' AND table = 'call_events' AND name = 'ts'"
    ).scalar()
    assert ts_type == ("DateTime64(3, 'UTC')" if client.features.datetime64 else "DateTime('UTC')")


def test_an_edited_migration_is_refused(client: ClickHouseClient, request: Any) -> None:
    db = f"edited_{request.node.callspec.id}"
    migrate(client, db)
    client.execute(f"DROP TABLE {db}.schema_migrations")
    client.execute(
        f"CREATE TABLE {db}.schema_migrations (version UInt32, name String, checksum String, "
        "applied_at DateTime('UTC')) ENGINE = MergeTree ORDER BY version"
    )
    client.insert(f"{db}.schema_migrations", ("version", "name", "checksum"), [(1, "raw_events", "0123456789abcdef")])
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        migrate(client, db)


def test_server_features_by_version() -> None:
    old, new = ServerFeatures.parse("18.16.1"), ServerFeatures.parse("24.8.4.13")
    assert not (old.datetime64 or old.ttl or old.low_cardinality or old.insert_deduplication_token)
    assert new.datetime64 and new.ttl and new.low_cardinality and new.insert_deduplication_token
    with pytest.raises(RuntimeError, match="minimum supported"):
        ServerFeatures.parse("1.1.54394")


def test_a_retried_insert_with_the_same_token_lands_once(client: ClickHouseClient, request: Any) -> None:
    """Servers >= 22.3 (chdb here) drop a retry whose first attempt did land; 18.16 has no token
    and keeps both copies until FINAL collapses them."""
    db = f"token_{request.node.callspec.id}"
    migrate(client, db)
    cols = ("warning_id", "rule", "kpi", "dimension", "dimension_value", "level", "change", "value", "threshold")
    cols += ("expected", "started_at", "updated_at", "resolved_at", "reason", "schema_version", "kafka_partition")
    cols += ("kafka_offset", "ingested_at")
    t = datetime(2026, 11, 2, 10, tzinfo=UTC)
    row = ("w1", "r", "k", "queue", "billing", "red", "opened", 0.5, 0.6, None, t, t, None, "why", 1, 0, 7, t)
    for _ in range(2):
        client.insert(f"{db}.warnings", cols, [row], token="cc.warnings|[(0, 7, 7)]|0")
    physical = int(client.execute(f"SELECT count() FROM {db}.warnings").scalar())
    final = int(client.execute(f"SELECT count() FROM {db}.warnings FINAL").scalar())
    assert final == 1
    assert physical == (1 if client.features.insert_deduplication_token else 2)
