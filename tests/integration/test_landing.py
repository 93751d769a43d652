"""Landing on the real broker and S3 endpoint: exactly once by offsets, dead letters, crash, replay."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopstream.events.generator import generate
from shopstream.events.kaggle import iter_timed, write_kaggle_csv
from shopstream.events.producer import produce
from shopstream.events.validation import validate_batch
from shopstream.landing import manifest
from shopstream.landing.service import LandingConfig, LandingService, end_offsets
from shopstream.settings import Settings
from shopstream.stack.base import venv_bin
from shopstream.stack.s3 import minio_client

pytestmark = pytest.mark.integration


def private_topic(settings: Settings) -> Settings:
    """Settings whose raw/invalid topics and landing group are this test's own."""
    tag = uuid.uuid4().hex[:8]
    kafka = settings.kafka.model_copy(update={
        "raw_topic": f"raw.{tag}", "invalid_topic": f"invalid.{tag}", "landing_group": f"landing-{tag}",
    })
    return settings.model_copy(update={"kafka": kafka})


def land(settings: Settings, **config) -> LandingService:
    cfg = LandingConfig(**{"idle_timeout_s": 5.0, **config})
    svc = LandingService(settings, cfg)
    try:
        svc.run(until_idle=True)
    finally:
        svc.close()
    return svc


def lake_rows(settings: Settings, kind: str) -> pa.Table:
    """All rows of the manifest's objects of one kind for this topic, read back from the lake."""
    lake = minio_client(settings)
    with psycopg.connect(settings.postgres.dsn()) as conn:
        keys = [r[0] for r in conn.execute(
            "select object_key from ops.landed_objects where topic = %s and kind = %s order by object_key",
            (settings.kafka.raw_topic, kind),
        )]
    tables = [pq.read_table(io.BytesIO(lake.get_object(settings.s3.lake_bucket, k).read())) for k in keys]
    return pa.concat_tables(tables) if tables else pa.table({})


def lake_keys(settings: Settings) -> set[str]:
    """Every object of this topic actually in the lake bucket (manifest or not)."""
    lake = minio_client(settings)
    topic = settings.kafka.raw_topic
    return {
        o.object_name
        for prefix in ("events/", "deadletter/")
        for o in lake.list_objects(settings.s3.lake_bucket, prefix=prefix, recursive=True)
        if f"/{topic}+p" in o.object_name
    }


def manifest_keys(settings: Settings) -> set[str]:
    with psycopg.connect(settings.postgres.dsn()) as conn:
        return {r[0] for r in conn.execute(
            "select object_key from ops.landed_objects where topic = %s", (settings.kafka.raw_topic,)
        )}


def topic_end_offsets(settings: Settings) -> dict[int, int]:
    return end_offsets(settings, settings.kafka.raw_topic)


def assert_exactly_once(settings: Settings, n_messages: int) -> tuple[pa.Table, pa.Table]:
    """Every offset of the raw topic is in exactly one lake row (events or dead letters); no orphans."""
    events, dead = lake_rows(settings, "events"), lake_rows(settings, "deadletter")
    coords = Counter(zip(events.column("src_partition").to_pylist(), events.column("src_offset").to_pylist(),
                         strict=True))
    coords.update(zip(dead.column("src_partition").to_pylist(), dead.column("src_offset").to_pylist(), strict=True))
    dupes = [c for c, n in coords.items() if n > 1]
    assert dupes == [], f"offsets landed twice: {dupes[:10]}"
    expected = {(p, o) for p, end in topic_end_offsets(settings).items() for o in range(end)}
    assert len(expected) == n_messages
    assert set(coords) == expected, f"missing offsets: {sorted(expected - set(coords))[:10]}"
    assert lake_keys(settings) == manifest_keys(settings), "lake objects not in the manifest (orphans)"
    return events, dead


def test_generated_events_land_exactly_once_with_dead_letters(stack, stack_settings):
    s = private_topic(stack_settings)
    stream = generate(20_000, seed=11, days=2)
    produce(s, stream.timed())
    truth = stream.truth
    svc = land(s, batch_size=7_000)
    assert svc.stats.messages == truth.total_messages
    events, dead = assert_exactly_once(s, truth.total_messages)
    assert events.num_rows == truth.valid_messages
    assert len(events.column("event_key").unique()) == truth.unique_events
    assert dead.num_rows == truth.invalid
    assert dict(Counter(dead.column("reason").to_pylist())) == {k: v for k, v in truth.invalid_by_reason.items() if v}
    # every dead letter carries its original payload, a readable reason and its source offset
    row = dead.slice(0, 1).to_pylist()[0]
    assert row["detail"] and row["payload"] is not None and row["src_offset"] >= 0
    # the dead-letter topic got one message per rejection
    assert sum(end_offsets(s, s.kafka.invalid_topic).values()) == truth.invalid
    # objects are partitioned by event hour and every row sits in its hour
    with psycopg.connect(s.postgres.dsn()) as conn:
        wrong = conn.execute(
            "select count(*) from ops.landed_objects where topic = %s and kind = 'events' "
            "and object_key not like 'events/year=' || to_char(event_hour at time zone 'UTC', 'YYYY') || "
            "'/month=' || to_char(event_hour at time zone 'UTC', 'MM') || '/%%'", (s.kafka.raw_topic,),
        ).fetchone()[0]
    assert wrong == 0
    # landing again finds nothing new and changes nothing
    before = manifest_keys(s)
    again = land(s)
    assert again.stats.messages == 0 and manifest_keys(s) == before


def _start_lander(s: Settings, log: Path, batch_size: int) -> subprocess.Popen:
    """A `shopstream land` process on the test's private topics and group, logging to ``log``."""
    env = {**s.service_env(), "SHOPSTREAM_KAFKA__RAW_TOPIC": s.kafka.raw_topic,
           "SHOPSTREAM_KAFKA__INVALID_TOPIC": s.kafka.invalid_topic,
           "SHOPSTREAM_KAFKA__LANDING_GROUP": s.kafka.landing_group}
    return subprocess.Popen([venv_bin("shopstream"), "land", "--batch-size", str(batch_size), "--max-interval", "1"],
                            env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def test_kill_dash_nine_mid_run_loses_nothing_and_lands_nothing_twice(stack, stack_settings, tmp_path):
    s = private_topic(stack_settings)
    stream = generate(60_000, seed=12, days=1)
    produce(s, stream.timed())
    proc = _start_lander(s, tmp_path / "land.log", batch_size=3000)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(manifest_keys(s)) < 10:
        time.sleep(0.2)
    assert proc.poll() is None, (tmp_path / "land.log").read_text()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    landed_before = len(manifest_keys(s))
    assert landed_before >= 10
    svc = land(s, batch_size=20_000)
    events, dead = assert_exactly_once(s, stream.truth.total_messages)
    assert events.num_rows == stream.truth.valid_messages and dead.num_rows == stream.truth.invalid
    assert 0 < svc.stats.messages < stream.truth.total_messages


def _assignments(log_text: str) -> list[set[int]]:
    """The partition sets a lander logged on each assignment, in order."""
    import re

    return [{int(p) for p in re.findall(r"\d+", m)} for m in re.findall(r"assigned partitions \[([\d, ]*)\]", log_text)]


def test_two_landers_of_one_group_survive_a_kill_dash_nine(stack, stack_settings, tmp_path):
    """Two `shopstream land` processes share the group's partitions; kill -9 one mid-run: the group rebalances,
    the survivor takes its partitions over from the committed manifest, and every message lands exactly once
    (landed + dead-lettered = produced, nothing twice)."""
    s = private_topic(stack_settings)
    stream = generate(60_000, seed=16, days=1)
    produce(s, stream.timed())
    logs = [tmp_path / f"land-{i}.log" for i in (1, 2)]
    procs = [_start_lander(s, log, batch_size=2000) for log in logs]
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            held = [(_assignments(log.read_text(errors="replace")) or [set()])[-1] for log in logs]
            if all(held) and len(manifest_keys(s)) >= 6:
                break
            time.sleep(0.5)
        assert all(held) and not held[0] & held[1], f"the group did not split the partitions: {held}"
        victim, survivor = procs
        assert victim.poll() is None, logs[0].read_text()[-3000:]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                events, dead = assert_exactly_once(s, stream.truth.total_messages)
                break
            except AssertionError:
                assert survivor.poll() is None, logs[1].read_text()[-3000:]
                time.sleep(2)
        else:
            events, dead = assert_exactly_once(s, stream.truth.total_messages)
        assert events.num_rows == stream.truth.valid_messages and dead.num_rows == stream.truth.invalid
        taken_over = _assignments(logs[1].read_text(errors="replace"))[-1]
        assert held[0] <= taken_over, f"survivor holds {taken_over}, not the killed lander's {held[0]}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)


def test_interrupted_batch_is_rolled_back_on_restart(stack, stack_settings):
    """A crash between writing objects and committing the manifest leaves no orphan behind."""
    s = private_topic(stack_settings)
    stream = generate(2_000, seed=13, days=1)
    produce(s, stream.timed())
    orphan = f"events/year=2019/month=10/day=01/hour=00/{s.kafka.raw_topic}+p0+{0:020d}-{99:020d}.parquet"
    lake = minio_client(s)
    lake.put_object(s.s3.lake_bucket, orphan, io.BytesIO(b"partial"), 7)
    with psycopg.connect(s.postgres.dsn(), autocommit=True) as conn:
        manifest.ensure_schema(conn)
        manifest.begin(conn, s.kafka.landing_group, s.kafka.raw_topic, {0: (0, 99, [orphan])})
    svc = land(s)
    assert svc.stats.recovered_intents == 1
    assert_exactly_once(s, stream.truth.total_messages)
    assert orphan not in lake_keys(s)


def test_kaggle_csv_replays_through_the_same_path(stack, stack_settings, tmp_path):
    s = private_topic(stack_settings)
    messages = list(generate(5_000, seed=14, days=1))
    csv = tmp_path / "2019-Oct.csv"
    write_kaggle_csv(messages, csv)
    replay = list(iter_timed(csv))
    assert replay and all(len(m) == 3 and m[2] is not None for m in replay)
    produce(s, replay)
    land(s)
    expected = validate_batch([(v, "t", 0, i) for i, (_, v, _) in enumerate(replay)])
    events, dead = assert_exactly_once(s, len(replay))
    assert events.num_rows == expected.valid.num_rows
    assert dead.num_rows == len(expected.rejected)
    assert sorted(events.column("event_key").to_pylist()) == sorted(expected.valid.column("event_key").to_pylist())


def test_kafka_connect_envelope_is_accepted(stack, stack_settings):
    import orjson

    s = private_topic(stack_settings)
    event = {"event_time": "2019-10-01 00:00:04 UTC", "event_type": "view", "product_id": 44600062,
             "category_id": 2103807459595387724, "category_code": "", "brand": "shiseido", "price": 35.79,
             "user_id": 541312140, "user_session": "72d76fde-8bb3-4e00-8c23-a032dfed738c"}
    envelope = {"schema": {"type": "struct", "optional": False}, "payload": event}
    produce(s, [(b"k", orjson.dumps(event)), (b"k", orjson.dumps(envelope)), (b"k", b"{broken")])
    land(s)
    events, dead = assert_exactly_once(s, 3)
    assert events.num_rows == 2 and len(set(events.column("event_key").to_pylist())) == 1
    assert dead.column("reason").to_pylist() == ["malformed_json"]


# ---------------------------------------------------------------------------- anyone's producer, hostile input
def hostile_values() -> list[bytes | None]:
    """One of every class of input that is not an event, and valid ones with surprises."""
    import orjson

    good = {"event_time": "2019-10-01 00:00:04 UTC", "event_type": "view", "product_id": 44600062,
            "category_id": 2103807459595387724, "category_code": None, "brand": "shiseido", "price": 35.79,
            "user_id": 541312140, "user_session": "72d76fde-8bb3-4e00-8c23-a032dfed738c"}
    raw = orjson.dumps(good)
    return [
        None,                                                     # tombstone
        b"",                                                      # empty value
        b"\xff\xfe\xfd not utf-8",                                # not UTF-8
        b"[" * 5000 + b"]" * 5000,                                # nested too deep
        b'{"a": ' * 600 + b"1" + b"}" * 600,                      # deep, parses: an object missing every field
        raw.replace(b"35.79", b"1e999"),                          # out of range as a double
        raw.replace(b"541312140", str(2**70).encode()),           # out of int64
        raw.replace(b"35.79", b"NaN"),                            # NaN
        raw.replace(b"35.79", b"Infinity"),                       # Infinity
        raw.replace(b"shiseido", b"shi\\u0000seido"),             # NUL in a string
        b"[1, 2, 3]", b'"just a string"', b"42",                  # JSON that is not an object
        orjson.dumps({**good, "extra": {"nested": [1, 2]}, "session_note": "x"}),  # extra fields: lands
        orjson.dumps({"schema": {"type": "struct"}, "payload": good}),            # Kafka Connect envelope: lands
        b'{"event_time": ' + b'"x' * 600_000 + b'"}',             # huge JSON (1.2 MB): too large
        b'{"x": "' + b"a" * (2 * 2**20 + 100_000) + b'"}',        # over 2 MB: too large, and too large for the
    ]                                                             # dead-letter topic: claim check


def kafka_python_send(settings: Settings, messages: list[tuple[bytes | None, bytes | None]]) -> list[tuple[int, int]]:
    """Produce with kafka-python, setting no timestamp (the broker's clock applies); return (partition, offset)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all",
                             max_request_size=8 * 2**20, linger_ms=5)
    try:
        futures = [producer.send(settings.kafka.raw_topic, key=k, value=v) for k, v in messages]
        producer.flush()
        return [(md.partition, md.offset) for md in (f.get(timeout=30) for f in futures)]
    finally:
        producer.close()


def read_topic(settings: Settings, topic: str) -> list:
    """Every message of a topic, read from offset 0 without a consumer group."""
    from confluent_kafka import Consumer, TopicPartition

    ends = end_offsets(settings, topic)
    c = Consumer(settings.kafka.client_config(**{"group.id": f"read-{uuid.uuid4().hex[:6]}",
                                                 "enable.auto.commit": False, "enable.partition.eof": True}))
    try:
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        out, eof = [], set()
        deadline = time.monotonic() + 60
        while len(eof) < len(ends) and time.monotonic() < deadline:
            for m in c.consume(100, timeout=0.5):
                if m.error() is None:
                    out.append(m)
                elif m.offset() >= ends[m.partition()]:
                    eof.add(m.partition())
        return out
    finally:
        c.close()


def test_hostile_input_from_a_client_without_timestamps_never_stops_the_landing(stack, stack_settings):
    """kafka-python, no timestamps: every hostile class mixed with valid events lands or is dead-lettered,
    each with its reason; the value over 2 MB goes by claim check and is in the lake byte for byte."""
    import base64

    import orjson

    from shopstream.events.validation import validate_message

    s = private_topic(stack_settings)
    valid = list(generate(600, seed=16, invalid_rate=0.0, duplicate_rate=0.0, late_rate=0.0))
    hostile = hostile_values()
    messages: list[tuple[bytes | None, bytes | None]] = []
    for i, (key, value) in enumerate(valid):
        messages.append((key, value))
        if i % 40 == 0 and hostile:
            messages.append((b"hostile-%d" % i, hostile.pop(0)))
    messages += [(b"hostile-end", v) for v in hostile]
    coords = kafka_python_send(s, messages)
    svc = land(s, batch_size=200)
    assert svc.stats.messages == len(messages)

    events, dead = assert_exactly_once(s, len(messages))   # landed + dead-lettered = produced, exactly
    by_coord = dict(zip(coords, (v for _, v in messages), strict=True))
    expected = {c: validate_message(v) for c, v in by_coord.items()}
    assert events.num_rows == sum(1 for e in expected.values() if e.row is not None)
    for row in dead.to_pylist():
        want = expected[(row["src_partition"], row["src_offset"])]
        assert (row["reason"], row["detail"]) == (want.reason, want.detail)
        assert row["payload"] == by_coord[(row["src_partition"], row["src_offset"])]   # byte for byte, all
    assert {"tombstone", "empty_value", "not_utf8", "too_deep", "missing_field", "number_out_of_range",
            "non_finite_number", "nul_character", "not_an_object", "too_large"} <= set(dead.column("reason").to_pylist())
    # the events carry their partition clock (the first of each partition has none)
    assert events.column("partition_max_event_time").null_count == len(set(events.column("src_partition").to_pylist()))

    # the dead-letter topic: one record per dead letter; the one over 2 MB by claim check
    big = max((c for c, v in by_coord.items() if v), key=lambda c: len(by_coord[c]))
    records = {}
    for m in read_topic(s, s.kafka.invalid_topic):
        rec = orjson.loads(m.value())
        records[(rec["src_partition"], rec["src_offset"])] = (rec, dict(m.headers() or []))
    assert set(records) == set(zip(dead.column("src_partition").to_pylist(), dead.column("src_offset").to_pylist(),
                                   strict=True))
    claims = {c: r for c, (r, h) in records.items() if r["claim_check"]}
    assert big in claims and len(claims) == 2   # the 2 MB value, and the 1.2 MB one once JSON-escaped
    lake = minio_client(s)
    for c, claim in claims.items():
        assert claim["payload"] is None and records[c][1]["claim_check"] == b"true" and claim["reason"] == "too_large"
        assert claim["size"] == len(by_coord[c]) and claim["preview"] == by_coord[c][:200].decode()
        assert claim["lake_key"] in manifest_keys(s)
        lake_copy = pq.read_table(io.BytesIO(lake.get_object(s.s3.lake_bucket, claim["lake_key"]).read()))
        [payload] = [r["payload"] for r in lake_copy.to_pylist() if (r["src_partition"], r["src_offset"]) == c]
        assert payload == by_coord[c]   # the full payload, byte for byte, is in the lake
    for (p, off), (rec, _) in records.items():   # the others carry their payload exactly
        if rec["claim_check"]:
            continue
        raw = by_coord[(p, off)]
        got = (None if rec["payload"] is None else base64.b64decode(rec["payload"])
               if rec["payload_encoding"] == "base64" else rec["payload"].encode())
        assert (got, rec["reason"], rec["size"]) == (raw, expected[(p, off)].reason, None if raw is None else len(raw)), rec
    with psycopg.connect(s.postgres.dsn()) as conn:
        assert manifest.totals(conn)["oversized"] >= 2
        assert conn.execute("select sum(oversized) from ops.landed_objects where topic = %s",
                            (s.kafka.raw_topic,)).fetchone()[0] == 2


def test_dead_letter_path_down_stops_the_landing_without_committing(stack, stack_settings):
    from shopstream.landing.service import LandingStopped

    s = private_topic(stack_settings)
    good = next(iter(generate(1, seed=17, invalid_rate=0.0, duplicate_rate=0.0, late_rate=0.0)))
    produce(s, [(b"k", b"{not json"), (b"k", b'{"event_type": "view"}'), good])
    broken = s.model_copy(update={"kafka": s.kafka.model_copy(update={"invalid_topic": "no such topic!"})})
    with pytest.raises(LandingStopped, match="dead-letter topic 'no such topic!'.*Nothing was committed"):
        land(broken)
    assert manifest_keys(s) == set()
    with psycopg.connect(s.postgres.dsn()) as conn:
        assert manifest.stored_offsets(conn, s.kafka.landing_group, s.kafka.raw_topic) == {}
    land(s)   # the path is back: the same batch lands, once
    _, dead = assert_exactly_once(s, 3)
    assert dead.column("reason").to_pylist() == ["malformed_json", "missing_field"]
