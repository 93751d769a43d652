"""The stream across broker restarts, on a private stack (PostgreSQL, SeaweedFS, Tansu, Redis) of its own.

After `shopstream down`/`up` (Stack.down/up) or a SIGKILL of the broker, new messages get offsets past the
old ones in every partition and land exactly once, old lake objects stay byte for byte, and the data DAG's
load takes only the new objects. When a log does go backwards (its storage lost), the landing service and
the feature-store consumer stop with an error naming topic, partition, committed offset and log end, and a
repeated offset range is refused instead of overwriting the lake.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from shopstream.events.generator import generate
from shopstream.events.producer import produce
from shopstream.landing.service import OffsetPastLogEnd, RepeatedOffsets, end_offsets, lag
from shopstream.settings import Settings, environment
from shopstream.stack.s3 import ObjectExists, minio_client, put_if_absent, s3_client
from shopstream.stack.supervisor import Stack
from shopstream.warehouse import bronze
from tests.conftest import _test_env
from tests.integration.test_landing import assert_exactly_once, land, manifest_keys, private_topic

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small() -> Iterator[tuple[Stack, Settings]]:
    """A stack of its own (these tests restart and break its broker): PostgreSQL, S3, broker, Redis."""
    state = Path(tempfile.mkdtemp(prefix="shopstream-restart-"))
    state.chmod(0o755)
    try:
        with environment(_test_env(state)) as settings:
            st = Stack(settings, only=["postgres", "s3", "broker", "redis"])
            try:
                st.up()
                yield st, settings
            finally:
                st.down()
    finally:
        shutil.rmtree(state, ignore_errors=True)


def lake_bytes(s: Settings, keys: set[str]) -> dict[str, bytes]:
    lake = minio_client(s)
    return {k: lake.get_object(s.s3.lake_bucket, k).read() for k in keys}


def objects(s: Settings) -> list[tuple[str, str, int, int, int]]:
    """(key, kind, partition, first offset, last offset) of this topic's manifest rows."""
    with psycopg.connect(s.postgres.dsn()) as conn:
        return conn.execute(
            "select object_key, kind, kafka_partition, first_offset, last_offset from ops.landed_objects "
            "where topic = %s", (s.kafka.raw_topic,)).fetchall()


def loaded_by(s: Settings, run_id: str) -> set[str]:
    with psycopg.connect(s.postgres.dsn()) as conn:
        return {r[0] for r in conn.execute("select object_key from bronze.loads where run_id = %s", (run_id,))}


def produce_without_timestamps(s: Settings, n: int) -> None:
    """``n`` valid events from kafka-python, a client not ours; the application sets no timestamp."""
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all")
    for i in range(n):
        event = {"event_time": f"2019-10-02 10:{i % 60:02d}:{i % 7:02d} UTC", "event_type": "view",
                 "product_id": 1000 + i, "category_id": 2053013555631882655, "category_code": "electronics.phone",
                 "brand": "acme", "price": 10.5 + i, "user_id": 500_000 + i, "user_session": str(uuid.uuid4())}
        p.send(s.kafka.raw_topic, key=event["user_session"].encode(), value=orjson.dumps(event))
    p.flush(timeout=60)
    p.close()


def kill_broker(st: Stack) -> None:
    """SIGKILL the broker's processes (no clean shutdown) and forget them."""
    for managed in st.get("broker").processes():
        for proc in managed.tree():
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)


@pytest.mark.parametrize("restart", ["down_up", "sigkill_broker"])
def test_offsets_continue_after_a_restart_and_everything_lands_once(small, restart):
    st, base = small
    s = private_topic(base)
    first = generate(3_000, seed=31, days=1)
    produce(s, first.timed())
    land(s)
    ends_before = end_offsets(s, s.kafka.raw_topic)
    assert sum(ends_before.values()) == first.truth.total_messages and all(ends_before.values())
    old_keys = manifest_keys(s)
    old_bytes = lake_bytes(s, old_keys)
    assert bronze.load(s, f"before-{restart}").objects >= 1

    if restart == "down_up":
        st.down()
        assert all(r.state == "stopped" for r in st.status())
    else:
        kill_broker(st)
    st.up()

    second = generate(2_000, seed=32, days=1)
    produce(s, second.timed())
    produce_without_timestamps(s, 200)
    svc = land(s)
    total = first.truth.total_messages + second.truth.total_messages + 200
    assert svc.stats.messages == second.truth.total_messages + 200
    events, _ = assert_exactly_once(s, total)  # every offset of every partition in exactly one lake row
    assert events.num_rows == first.truth.valid_messages + second.truth.valid_messages + 200

    ends_after = end_offsets(s, s.kafka.raw_topic)
    new = [o for o in objects(s) if o[0] not in old_keys]
    for p, end in ends_before.items():
        assert ends_after[p] > end, f"partition {p} got nothing new"
        firsts = [o[3] for o in new if o[2] == p]
        assert min(firsts) == end, f"partition {p}: new offsets start at {min(firsts)}, not after the old end {end}"
    assert lake_bytes(s, old_keys) == old_bytes, "an old lake object changed"

    run = f"after-{restart}"
    bronze.load(s, run)
    mine = {k for k in loaded_by(s, run) if f"/{s.kafka.raw_topic}+p" in k}
    assert mine == {o[0] for o in new if o[1] == "events"}, "the load took old objects or missed new ones"
    assert all(r.lag == 0 and not r.past_end for r in lag(s))


def test_consumers_stop_loudly_when_a_committed_offset_is_past_the_log_end(small):
    from shopstream.cli import _print_stream_metrics
    from shopstream.serving.consumer import run_once

    st, base = small
    s = private_topic(base)
    produce(s, generate(1_000, seed=33, days=1).timed())
    land(s)
    group = f"features-{s.kafka.landing_group}"
    assert run_once(s, group=group, idle_timeout_s=3.0).messages == 1_000
    ends = end_offsets(s, s.kafka.raw_topic)

    # the log goes backwards for real: the broker's storage of the topic's partitions is lost while it is down
    st.get("broker").stop()
    lake = minio_client(s)
    prefix = f"clusters/tansu_cluster/topics/{s.kafka.raw_topic}/partitions/"
    gone = [o.object_name for o in lake.list_objects(s.s3.broker_bucket, prefix=prefix, recursive=True)]
    assert gone
    for key in gone:
        lake.remove_object(s.s3.broker_bucket, key)
    st.up()
    produce(s, generate(40, seed=34, days=1).timed())
    new_ends = end_offsets(s, s.kafka.raw_topic)
    assert sum(new_ends.values()) == 40
    before = manifest_keys(s)

    with pytest.raises(OffsetPastLogEnd) as landing_error:
        land(s)
    with pytest.raises(OffsetPastLogEnd) as features_error:
        run_once(s, group=group, idle_timeout_s=3.0)
    for err, group_name in ((landing_error.value, s.kafka.landing_group), (features_error.value, group)):
        msg = str(err)
        assert repr(s.kafka.raw_topic) in msg and repr(group_name) in msg
        for p, end in ends.items():
            assert f"partition {p}: committed offset {end:,}, log end {new_ends[p]:,}" in msg, msg
    assert manifest_keys(s) == before  # nothing landed from the new log

    rows = lag(s)
    assert [(r.partition, r.committed, r.end, r.past_end) for r in rows] == [
        (p, ends[p], new_ends[p], True) for p in sorted(ends)]
    assert _print_stream_metrics(s) is True  # `shopstream status` flags it (and exits 1)


def test_a_repeated_offset_range_is_refused_not_overwritten(small):
    _, base = small
    s = private_topic(base)
    produce(s, generate(600, seed=35, days=1).timed())
    land(s)
    keys = manifest_keys(s)
    old = lake_bytes(s, keys)
    # the group is sent back to offset 0 (as a consumer reset does), so the same offset ranges come again
    with psycopg.connect(s.postgres.dsn(), autocommit=True) as conn:
        conn.execute("update ops.landing_offsets set next_offset = 0 where consumer_group = %s and topic = %s",
                     (s.kafka.landing_group, s.kafka.raw_topic))
    with pytest.raises(RepeatedOffsets, match="were landed before"):
        land(s)
    assert manifest_keys(s) == keys and lake_bytes(s, keys) == old
    with psycopg.connect(s.postgres.dsn()) as conn:
        assert conn.execute("select count(*) from ops.landing_intents where topic = %s",
                            (s.kafka.raw_topic,)).fetchone()[0] == 0

    # below the manifest: a create-only write never replaces an object, whoever wrote it
    client, key = s3_client(s), sorted(keys)[0]
    assert put_if_absent(client, s.s3.lake_bucket, key, old[key]) is False  # same bytes: a retried write
    with pytest.raises(ObjectExists, match="not overwritten"):
        put_if_absent(client, s.s3.lake_bucket, key, b"other bytes")
    assert lake_bytes(s, {key}) == {key: old[key]}
