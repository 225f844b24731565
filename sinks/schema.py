"""Versioned SQL migrations (``sinks/migrations/NNNN_name.sql``), applied by ``callpulse db migrate``
and by the sink on every start.

A migration runs once and is recorded in ``<db>.schema_migrations`` with the checksum of its
text; every statement is idempotent (``IF NOT EXISTS``), so a migration interrupted half-way is
simply run again, and two sinks starting together do no harm. A recorded migration whose file
changed is an error: a released migration is never edited, a new one is added.

The files are templates (``string.Template``) filled per server: ``$db``, ``$datetime``
(DateTime64(3) where the server has it), ``$lc`` (LowCardinality(String) where available),
``$dedup_window`` (the table setting that lets ``insert_deduplication_token`` work on a
non-replicated table). Retention (TTL) is not in a migration: it follows the configuration and
is re-applied on every migrate.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template

from sinks.clickhouse_client import ClickHouseClient, ServerFeatures

log = logging.getLogger("callpulse.schema")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
RAW_TABLES = ("call_events", "ticket_events", "survey_responses", "agent_state_events")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def statements(self, database: str, features: ServerFeatures) -> list[str]:
        sql = Template(self.text).substitute(
            db=database,
            datetime="DateTime64(3, 'UTC')" if features.datetime64 else "DateTime('UTC')",
            lc="LowCardinality(String)" if features.low_cardinality else "String",
            dedup_window=", non_replicated_deduplication_window = 1000" if features.insert_deduplication_token else "",
        )
        body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip()]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    out = []
    for path in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        version, name = path.stem.split("_", 1)
        out.append(Migration(int(version), name, path.read_text()))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version in {directory}")
    return out


def applied_migrations(client: ClickHouseClient, database: str) -> dict[int, str]:
    rows = client.execute(f"SELECT version, any(checksum) FROM {database}.schema_migrations GROUP BY version").rows
    return {int(v): str(c) for v, c in rows}


def migrate(client: ClickHouseClient, database: str, retention_days: int | None = None) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    client.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.execute(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, name String, checksum String, applied_at DateTime('UTC')) "
        "ENGINE = MergeTree ORDER BY version"
    )
    done = applied_migrations(client, database)
    applied = []
    for m in load_migrations():
        if m.version in done:
            if done[m.version] != m.checksum:
                raise RuntimeError(
                    f"migration {m.version:04d}_{m.name} changed after it was applied to {database} "
                    f"(checksum {done[m.version]} -> {m.checksum}); add a new migration instead"
                )
            continue
        for statement in m.statements(database, client.features):
            client.execute(statement)
        client.insert(
            f"{database}.schema_migrations",
            ("version", "name", "checksum", "applied_at"),
            [(m.version, m.name, m.checksum, datetime.now(UTC).replace(microsecond=0))],
        )
        log.info("applied migration %04d_%s", m.version, m.name)
        applied.append(f"{m.version:04d}_{m.name}")
    apply_retention(client, database, retention_days)
    return applied


def apply_retention(client: ClickHouseClient, database: str, days: int | None) -> None:
    """TTL on the raw event tables from the configuration (servers with TTL only)."""
    if days is None:
        return
    if not client.features.ttl:
        log.warning("ClickHouse %s has no TTL: raw_retention_days is not applied", client.features.version)
        return
    for table in RAW_TABLES:
        client.execute(f"ALTER TABLE {database}.{table} MODIFY TTL toDateTime(ts) + INTERVAL {int(days)} DAY")
