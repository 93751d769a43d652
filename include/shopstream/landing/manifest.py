"""The landing manifest in PostgreSQL: landed objects, the offsets they cover, and pending intents.

PostgreSQL is the source of truth for what has landed. A batch is landed in three steps:
1. ``begin``: record an *intent* per partition listing the object keys about to be written (committed);
2. the objects are written to the lake (and dead letters produced);
3. ``commit``: in ONE transaction, insert the manifest rows, advance the partition's next offset and
   delete the intent.
A crash between 1 and 3 leaves an intent: on partition assignment ``recover`` deletes its objects (they
were never in the manifest) and the partition resumes from its recorded next offset. Nothing is lost
(offsets advance only with the manifest) and nothing lands twice (orphans are removed, re-landed
objects get the same names).

A key is landed once: objects are written create-only and a manifest row is never replaced, so an
offset range handed out again by the broker is an error (the landing checks ``landed_keys`` before the
intent), not an overwrite.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson
import psycopg

from shopstream.landing.writer import LakeObject

DDL = """
create schema if not exists ops;
create table if not exists ops.landed_objects (
    object_key      text primary key,
    kind            text not null check (kind in ('events', 'deadletter')),
    topic           text not null,
    kafka_partition int not null,
    first_offset    bigint not null,
    last_offset     bigint not null,
    event_hour      timestamptz not null,
    rows            int not null,
    bytes           bigint not null,
    reasons         jsonb,
    landed_at       timestamptz not null default now()
);
-- dead letters too large for the dead-letter topic (claim check: the payload is only in this object)
alter table ops.landed_objects add column if not exists oversized int not null default 0;
create index if not exists landed_objects_kind_landed_at on ops.landed_objects (kind, landed_at);
create table if not exists ops.landing_offsets (
    consumer_group  text not null,
    topic           text not null,
    kafka_partition int not null,
    next_offset     bigint not null,
    updated_at      timestamptz not null default now(),
    primary key (consumer_group, topic, kafka_partition)
);
-- the partition's event-time clock at next_offset: largest event time landed so far (epoch us)
alter table ops.landing_offsets add column if not exists max_event_time_us bigint;
create table if not exists ops.landing_intents (
    consumer_group  text not null,
    topic           text not null,
    kafka_partition int not null,
    first_offset    bigint not null,
    last_offset     bigint not null,
    object_keys     text[] not null,
    created_at      timestamptz not null default now(),
    primary key (consumer_group, topic, kafka_partition)
);
"""


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create the ops tables if missing (idempotent)."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('shopstream.warehouse.ddl'))")
        conn.execute(DDL)


def stored_offsets(conn: psycopg.Connection, group: str, topic: str) -> dict[int, int]:
    """Next offset to read per partition, as recorded with the manifest."""
    rows = conn.execute(
        "select kafka_partition, next_offset from ops.landing_offsets where consumer_group = %s and topic = %s",
        (group, topic),
    ).fetchall()
    return dict(rows)


def stored_clocks(conn: psycopg.Connection, group: str, topic: str) -> dict[int, int]:
    """Per partition, the largest event time landed before its next offset (epoch us; see events.lateness)."""
    rows = conn.execute(
        "select kafka_partition, max_event_time_us from ops.landing_offsets "
        "where consumer_group = %s and topic = %s and max_event_time_us is not null",
        (group, topic),
    ).fetchall()
    return dict(rows)


def pending_intents(
    conn: psycopg.Connection, group: str, topic: str, partitions: Iterable[int]
) -> list[tuple[int, list[str]]]:
    """Intents left by a crashed batch for these partitions: (partition, object keys)."""
    return conn.execute(
        "select kafka_partition, object_keys from ops.landing_intents "
        "where consumer_group = %s and topic = %s and kafka_partition = any(%s)",
        (group, topic, list(partitions)),
    ).fetchall()


def landed_keys(conn: psycopg.Connection, keys: Sequence[str]) -> dict[str, object]:
    """Those of ``keys`` the manifest holds, with when they landed."""
    if not keys:
        return {}
    return dict(conn.execute(
        "select object_key, landed_at from ops.landed_objects where object_key = any(%s)", (list(keys),)
    ).fetchall())


def clear_intent(conn: psycopg.Connection, group: str, topic: str, partition: int) -> None:
    with conn.transaction():
        conn.execute(
            "delete from ops.landing_intents where consumer_group = %s and topic = %s and kafka_partition = %s",
            (group, topic, partition),
        )


def begin(conn: psycopg.Connection, group: str, topic: str, batches: dict[int, tuple[int, int, list[str]]]) -> None:
    """Record the intent to write ``object_keys`` for offsets first..last of each partition."""
    with conn.transaction():
        for partition, (first, last, keys) in batches.items():
            conn.execute(
                "insert into ops.landing_intents "
                "(consumer_group, topic, kafka_partition, first_offset, last_offset, object_keys) "
                "values (%s, %s, %s, %s, %s, %s) on conflict (consumer_group, topic, kafka_partition) do update "
                "set first_offset = excluded.first_offset, last_offset = excluded.last_offset, "
                "object_keys = excluded.object_keys, created_at = now()",
                (group, topic, partition, first, last, keys),
            )


def commit(
    conn: psycopg.Connection, group: str, topic: str, next_offsets: dict[int, int], objects: Sequence[LakeObject],
    clocks: dict[int, int] | None = None,
) -> None:
    """In one transaction: manifest rows in, next offsets (and partition clocks) advanced, intents cleared."""
    clocks = clocks or {}
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                "insert into ops.landed_objects (object_key, kind, topic, kafka_partition, first_offset, "
                "last_offset, event_hour, rows, bytes, reasons, oversized) "
                "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (o.key, o.kind, o.topic, o.partition, o.first_offset, o.last_offset, o.hour, o.rows,
                     len(o.data), orjson.dumps(o.reasons).decode() if o.reasons else None, o.oversized)
                    for o in objects
                ],
            )
            cur.executemany(
                "insert into ops.landing_offsets (consumer_group, topic, kafka_partition, next_offset, "
                "max_event_time_us) values (%s, %s, %s, %s, %s) "
                "on conflict (consumer_group, topic, kafka_partition) do update "
                "set next_offset = excluded.next_offset, "
                "max_event_time_us = coalesce(excluded.max_event_time_us, ops.landing_offsets.max_event_time_us), "
                "updated_at = now()",
                [(group, topic, p, off, clocks.get(p)) for p, off in next_offsets.items()],
            )
            cur.execute(
                "delete from ops.landing_intents where consumer_group = %s and topic = %s "
                "and kafka_partition = any(%s)",
                (group, topic, list(next_offsets)),
            )


def totals(conn: psycopg.Connection) -> dict:
    """Events landed, rejected by reason, dead letters sent by claim check (oversized) and objects."""
    ev = conn.execute(
        "select coalesce(sum(rows), 0), count(*) from ops.landed_objects where kind = 'events'"
    ).fetchone()
    oversized = conn.execute(
        "select coalesce(sum(oversized), 0) from ops.landed_objects where kind = 'deadletter'").fetchone()[0]
    reasons = conn.execute(
        "select r.key, sum(r.value::bigint) from ops.landed_objects o, jsonb_each_text(o.reasons) r "
        "where o.kind = 'deadletter' group by r.key order by 2 desc"
    ).fetchall()
    return {"events": int(ev[0]), "event_objects": int(ev[1]), "rejected": {k: int(v) for k, v in reasons},
            "oversized": int(oversized)}
