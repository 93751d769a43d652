"""Bronze: load landed lake objects into ``bronze.events`` with COPY, idempotently per object."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from shopstream.settings import Settings
from shopstream.stack.s3 import minio_client
from shopstream.warehouse.copy import copy_arrow
from shopstream.warehouse.ddl import ensure_schemas

OBJECTS_PER_TRANSACTION = 50


@dataclass
class BronzeResult:
    objects: int
    rows: int
    seconds: float
    hours: list[str]

    def summary(self) -> str:
        return (f"bronze: loaded {self.rows:,} rows from {self.objects} lake objects in {self.seconds:.1f}s; "
                f"{len(self.hours)} event hour(s) affected")


def pending_objects(conn: psycopg.Connection, landed_before: datetime | None = None) -> list[str]:
    """Landed event objects not yet loaded (oldest first), optionally only those landed before a time."""
    return [r[0] for r in conn.execute(
        "select o.object_key from ops.landed_objects o left join bronze.loads l using (object_key) "
        "where o.kind = 'events' and l.object_key is null and (%s::timestamptz is null or o.landed_at < %s) "
        "order by o.landed_at, o.object_key",
        (landed_before, landed_before),
    )]


def load(settings: Settings, run_id: str, landed_before: datetime | None = None,
         on_progress: Callable[[int, int], None] | None = None) -> BronzeResult:
    """Load every pending landed object; each object's delete + COPY + load record commit together."""
    t0 = time.monotonic()
    lake = minio_client(settings)
    bucket = settings.s3.lake_bucket
    rows = 0
    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as conn:
        ensure_schemas(conn)
        keys = pending_objects(conn, landed_before)
        for i in range(0, len(keys), OBJECTS_PER_TRANSACTION):
            chunk = keys[i:i + OBJECTS_PER_TRANSACTION]
            tables = [_read(lake, bucket, key) for key in chunk]
            with conn.transaction():
                conn.execute("delete from bronze.events where object_key = any(%s)", (chunk,))
                loaded_at = datetime.now(UTC)
                for key, table in zip(chunk, tables, strict=True):
                    n = table.num_rows
                    table = table.append_column("object_key", pa.array([key] * n, pa.string()))
                    table = table.append_column("loaded_at", pa.array([loaded_at] * n, pa.timestamp("us", tz="UTC")))
                    copy_arrow(conn, "bronze.events", table)
                    conn.execute(
                        "insert into bronze.loads (object_key, rows, run_id) values (%s, %s, %s) "
                        "on conflict (object_key) do update set rows = excluded.rows, run_id = excluded.run_id, "
                        "loaded_at = now()", (key, table.num_rows, run_id),
                    )
                    rows += table.num_rows
            if on_progress:
                on_progress(min(i + OBJECTS_PER_TRANSACTION, len(keys)), len(keys))
        hours = [r[0].isoformat() for r in conn.execute(
            "select distinct o.event_hour from bronze.loads l join ops.landed_objects o using (object_key) "
            "where l.run_id = %s order by 1", (run_id,),
        )]
    return BronzeResult(len(keys), rows, time.monotonic() - t0, hours)


def _read(lake, bucket: str, key: str) -> pa.Table:
    resp = lake.get_object(bucket, key)
    try:
        return pq.read_table(io.BytesIO(resp.read()))
    finally:
        resp.close()
        resp.release_conn()
