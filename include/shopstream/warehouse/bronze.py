"""Bronze: load landed lake objects into ``bronze.events`` with COPY, idempotently per object."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
READ_THREADS = 4  # lake downloads in flight while the previous chunk is written


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
    """Load every pending landed object; each object's delete + COPY + load record commit together.

    Objects go in chunks of ``OBJECTS_PER_TRANSACTION``, one COPY and one transaction per chunk; the next
    chunk is downloaded while one is written.
    """
    t0 = time.monotonic()
    lake = minio_client(settings)
    bucket = settings.s3.lake_bucket
    rows = 0
    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as conn, \
            ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        ensure_schemas(conn)
        keys = pending_objects(conn, landed_before)
        chunks = [keys[i:i + OBJECTS_PER_TRANSACTION] for i in range(0, len(keys), OBJECTS_PER_TRANSACTION)]

        def fetch(n: int) -> list[Future[pa.Table]]:
            return [pool.submit(_read, lake, bucket, key) for key in chunks[n]] if n < len(chunks) else []

        reads = fetch(0)
        for n, chunk in enumerate(chunks):
            tables = [f.result() for f in reads]
            reads = fetch(n + 1)  # the next objects download while this chunk is written
            loaded_at = datetime.now(UTC)
            tagged = [
                t.append_column("object_key", pa.array([key] * t.num_rows, pa.string()))
                .append_column("loaded_at", pa.array([loaded_at] * t.num_rows, pa.timestamp("us", tz="UTC")))
                for key, t in zip(chunk, tables, strict=True)
            ]
            with conn.transaction():
                conn.execute("delete from bronze.events where object_key = any(%s)", (chunk,))
                copy_arrow(conn, "bronze.events", pa.concat_tables(tagged, promote_options="default"))
                with conn.cursor() as cur:
                    cur.executemany(
                        "insert into bronze.loads (object_key, rows, run_id) values (%s, %s, %s) "
                        "on conflict (object_key) do update set rows = excluded.rows, run_id = excluded.run_id, "
                        "loaded_at = now()", [(key, t.num_rows, run_id) for key, t in zip(chunk, tables, strict=True)],
                    )
            rows += sum(t.num_rows for t in tables)
            if on_progress:
                on_progress(min((n + 1) * OBJECTS_PER_TRANSACTION, len(keys)), len(keys))
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
