"""One small client interface over the two ClickHouse backends callpulse runs on.

* ``NativeClient``: a ClickHouse server (or cluster node) over the native protocol, with
  clickhouse-driver. What production uses (``CALLPULSE_CLICKHOUSE_DSN``).
* ``ChdbClient``: chdb, the ClickHouse engine in-process, data in ``<data_dir>/chdb``. The
  embedded default, so the demo needs no server. One process at a time may open the folder.

Both run the same SQL. ``ServerFeatures`` says what the server version offers, so the schema
leaves out only what an old server lacks (see ``docs/bi.md``: minimum supported version).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from callpulse.config import Settings

MINIMUM_VERSION = (18, 16)


@dataclass(frozen=True)
class ServerFeatures:
    """Capabilities by server version (thresholds are the releases that made them general)."""

    version: tuple[int, ...]

    @property
    def datetime64(self) -> bool:
        return self.version >= (20, 1)

    @property
    def low_cardinality(self) -> bool:
        return self.version >= (20, 1)

    @property
    def ttl(self) -> bool:
        return self.version >= (20, 1)

    @property
    def insert_deduplication_token(self) -> bool:
        """``insert_deduplication_token`` plus ``non_replicated_deduplication_window``."""
        return self.version >= (22, 3)

    @classmethod
    def parse(cls, text: str) -> ServerFeatures:
        parts = tuple(int(x) for x in re.findall(r"\d+", text)[:3])
        if parts[:2] < MINIMUM_VERSION:
            raise RuntimeError(f"ClickHouse {text} is older than the minimum supported 18.16")
        return cls(parts)


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None


class ClickHouseClient(Protocol):
    features: ServerFeatures
    description: str

    def execute(self, sql: str) -> QueryResult: ...

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], token: str | None = None
    ) -> None: ...

    def close(self) -> None: ...


class NativeClient:
    """A server over the native protocol. Reconnects on the next call after a network error."""

    def __init__(self, dsn: str) -> None:
        from clickhouse_driver import Client

        self._client = Client.from_url(dsn)
        self._client.connection.connect_timeout = 5
        self._client.connection.send_receive_timeout = 60
        safe = re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", dsn)
        self.description = f"ClickHouse server {safe}"
        self.features = ServerFeatures.parse(self._client.execute("SELECT version()")[0][0])

    def execute(self, sql: str) -> QueryResult:
        rows, types = self._client.execute(sql, with_column_types=True)
        return QueryResult([name for name, _ in types], [tuple(r) for r in rows])

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], token: str | None = None
    ) -> None:
        settings: dict[str, Any] = {}
        if token and self.features.insert_deduplication_token:
            settings["insert_deduplication_token"] = token
        self._client.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES", list(rows), settings=settings)

    def close(self) -> None:
        self._client.disconnect()


def _json_default(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.timestamp()
    raise TypeError(type(v).__name__)


class ChdbClient:
    """chdb in this process. chdb is not re-entrant: calls are serialised by a lock."""

    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        from chdb import session

        path.mkdir(parents=True, exist_ok=True)
        try:
            self._session = session.Session(str(path))
        except Exception as exc:  # chdb raises RuntimeError with the engine's message
            raise RuntimeError(
                f"cannot open the embedded ClickHouse at {path}: {exc}. Only one process can open it at a "
                "time: stop the running `callpulse sink` (or demo), or set CALLPULSE_CLICKHOUSE_DSN to a server."
            ) from exc
        self.description = f"embedded chdb at {path}"
        self.features = ServerFeatures.parse(self.execute("SELECT version()").scalar())

    def execute(self, sql: str) -> QueryResult:
        with self._lock:
            res = self._session.query(sql, "JSONCompact")
        raw = res.bytes() if hasattr(res, "bytes") else bytes(res)
        if not raw.strip():
            return QueryResult([])
        doc = orjson.loads(raw)
        return QueryResult([m["name"] for m in doc["meta"]], [tuple(r) for r in doc["data"]])

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], token: str | None = None
    ) -> None:
        if not rows:
            return
        lines = b"\n".join(orjson.dumps(dict(zip(columns, r, strict=True)), default=_json_default) for r in rows)
        settings = f" SETTINGS insert_deduplication_token='{token}'" if token else ""
        sql = f"INSERT INTO {table} ({', '.join(columns)}){settings} FORMAT JSONEachRow\n{lines.decode()}"
        with self._lock:
            self._session.query(sql)

    def close(self) -> None:
        with self._lock:
            self._session.close()


def connect(settings: Settings) -> ClickHouseClient:
    """The configured backend: the DSN's server, else embedded chdb under ``data_dir``."""
    if settings.clickhouse_dsn:
        return NativeClient(settings.clickhouse_dsn)
    return ChdbClient(settings.chdb_path)
