"""The embedded S3 endpoint (SeaweedFS) and the broker's start-up guard, on real endpoints.

SeaweedFS checks access keys and refuses stale conditional PUTs. The guard is tested against npm s3rver,
the endpoint the embedded stack used before: it really ignores conditional PUTs, and a Tansu broker on it
really restarts a partition at offset 0 (kept as a test fixture only, installed by `make install`). A state
directory made with s3rver is migrated into SeaweedFS on the first start; damage already done there stops
the broker, naming the partition.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from shopstream.settings import Settings, environment
from shopstream.stack.base import StackError, free_port, port_in_use, wait_until
from shopstream.stack.broker import BrokerService
from shopstream.stack.process import ManagedProcess, ProcSpec
from shopstream.stack.s3 import conditional_write_problem, minio_client
from shopstream.stack.supervisor import Stack
from tests.conftest import _test_env

pytestmark = pytest.mark.integration

S3RVER_KEYS = {"SHOPSTREAM_S3__ACCESS_KEY": "S3RVER", "SHOPSTREAM_S3__SECRET_KEY": "S3RVER"}


@pytest.fixture(scope="module")
def seaweed() -> Iterator[Settings]:
    """The embedded S3 endpoint alone, under a temp dir, with credentials of this test."""
    state = Path(tempfile.mkdtemp(prefix="shopstream-s3-"))
    env = {**_test_env(state), "SHOPSTREAM_S3__ACCESS_KEY": "test-key", "SHOPSTREAM_S3__SECRET_KEY": "test-secret-1"}
    try:
        with environment(env) as settings:
            st = Stack(settings, only=["s3"])
            try:
                st.up()
                yield settings
            finally:
                st.down()
    finally:
        shutil.rmtree(state, ignore_errors=True)


def client(s: Settings, key: str | None, secret: str | None):
    cfg = Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"})
    if key is None:
        from botocore import UNSIGNED

        cfg = cfg.merge(Config(signature_version=UNSIGNED))
    return boto3.client("s3", endpoint_url=s.s3.endpoint_url, aws_access_key_id=key or "x",
                        aws_secret_access_key=secret or "x", region_name=s.s3.region, config=cfg)


def test_only_the_configured_access_key_is_accepted(seaweed):
    s, bucket = seaweed, seaweed.s3.lake_bucket
    client(s, "test-key", "test-secret-1").put_object(Bucket=bucket, Key="auth/ok", Body=b"ok")
    for key, secret, code in (("test-key", "wrong-secret", "SignatureDoesNotMatch"),
                              ("someone-else", "test-secret-1", "InvalidAccessKeyId"),
                              (None, None, "AccessDenied")):
        for call in (lambda c: c.get_object(Bucket=bucket, Key="auth/ok"),
                     lambda c: c.put_object(Bucket=bucket, Key="auth/intruder", Body=b"x")):
            with pytest.raises(ClientError) as e:
                call(client(s, key, secret))
            assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
            assert e.value.response["Error"]["Code"] in (code, "AccessDenied"), e.value.response["Error"]
    keys = [o.object_name for o in minio_client(s).list_objects(bucket, prefix="auth/")]
    assert keys == ["auth/ok"]


def test_seaweedfs_refuses_stale_conditional_writes(seaweed):
    assert conditional_write_problem(seaweed, seaweed.s3.broker_bucket) is None


# ----------------------------------------------------------------- s3rver, the endpoint that ignores them
def s3rver_bin() -> str:
    path = Path(sys.prefix) / "node" / "node_modules" / ".bin" / "s3rver"
    assert path.exists(), f"{path} is missing: `make install` installs the s3rver test fixture with npm"
    return str(path)


@contextmanager
def s3rver(data_dir: Path, port: int, run_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = ManagedProcess(ProcSpec("s3rver", [s3rver_bin(), "-d", str(data_dir), "-a", "127.0.0.1", "-p", str(port),
                                              "--silent"]), run_dir, run_dir)
    proc.start()
    try:
        assert wait_until(lambda: None if port_in_use("127.0.0.1", port) else "down", 30) is None, proc.tail()
        yield
    finally:
        proc.stop()


@contextmanager
def unguarded_broker(s: Settings, run_dir: Path) -> Iterator[None]:
    """Tansu started directly (as the stack did before the guard), on whatever endpoint the settings name."""
    svc = BrokerService(s)
    proc = ManagedProcess(svc.specs()[0], run_dir, run_dir)
    proc.start()
    try:
        assert wait_until(svc.check, 30) is None, proc.tail()
        yield
    finally:
        proc.stop()


def test_the_broker_refuses_an_endpoint_that_ignores_conditional_writes(tmp_path):
    s3_port = free_port()
    env = {**_test_env(tmp_path), **S3RVER_KEYS, "SHOPSTREAM_S3__ENDPOINT_URL": f"http://127.0.0.1:{s3_port}"}
    with s3rver(tmp_path / "s3rver", s3_port, tmp_path / "run"), environment(env) as s:
        minio_client(s).make_bucket(s.s3.broker_bucket)
        problem = conditional_write_problem(s, s.s3.broker_bucket)
        assert "If-None-Match: *" in problem and "accepted (200)" in problem and "If-Match" in problem
        broker = BrokerService(s)
        with pytest.raises(StackError) as e:
            broker.start()
        assert "does not honour conditional writes" in str(e.value) and s.s3.endpoint_url in str(e.value)
        assert broker.running() == [] and not port_in_use(s.kafka.host, s.kafka.port)


def produce_batches(s: Settings, topic: str, partition: int, n: int, per_batch: int) -> list[int]:
    """``n`` messages to one partition in batches of ``per_batch`` (one record batch each); their offsets."""
    p = Producer(s.kafka.client_config(**{"enable.idempotence": True, "linger.ms": 0}))
    offsets: list[int] = []
    for start in range(0, n, per_batch):
        for i in range(start, min(n, start + per_batch)):
            p.produce(topic, value=f"m{i}".encode(), partition=partition,
                      on_delivery=lambda err, m: offsets.append(m.offset() if err is None else -1))
        assert p.flush(30) == 0
    return sorted(offsets)


def test_an_s3rver_state_dir_is_migrated_and_damage_done_there_stops_the_broker(tmp_path):
    """The issue's story on s3rver, then the upgrade: the healthy copy continues, the damaged one is refused."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    env = _test_env(state)
    old_env = {**env, **S3RVER_KEYS}
    with s3rver(state / "s3", int(env["SHOPSTREAM_S3__ENDPOINT_URL"].rsplit(":", 1)[1]), tmp_path / "run"), \
            environment(old_env) as s:
        lake = minio_client(s)
        for bucket in s.s3.buckets():
            lake.make_bucket(bucket)
        import io

        lake.put_object(s.s3.lake_bucket, "events/old.parquet", io.BytesIO(b"an old lake object"), 18)
        with unguarded_broker(s, tmp_path / "run"):
            admin = AdminClient(s.kafka.client_config())
            admin.create_topics([NewTopic("t.old", 2, 1)])["t.old"].result(10)
            assert produce_batches(s, "t.old", 0, 200, 50) == list(range(200))
            assert produce_batches(s, "t.old", 1, 100, 50) == list(range(100))
        shutil.copytree(state / "s3", tmp_path / "healthy-s3")
        with unguarded_broker(s, tmp_path / "run"):
            assert produce_batches(s, "t.old", 0, 1, 1) == [0]  # the bug: offset 0 again, batch 0 overwritten

    # upgrade of the damaged state dir: objects move to SeaweedFS, the broker refuses to start
    with environment(env) as s:
        st = Stack(s, only=["s3", "broker"])
        try:
            with pytest.raises(StackError) as e:
                st.up()
            msg = str(e.value)
            assert re.search(r"topic 't.old' partition 0: watermark 1, but a record batch holds offsets \d+-199", msg), msg
            assert "partition 1" not in msg and "rm -rf" in msg and "docs/operations.md" in msg
            assert (state / "s3rver" / "MIGRATED").exists()
            deadline = time.monotonic() + 60   # weed mini writes its options file once all its parts are up
            while not (state / "s3" / "mini.options").exists() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert (state / "s3" / "mini.options").exists(), sorted(p.name for p in (state / "s3").iterdir())
            assert minio_client(s).get_object(s.s3.lake_bucket, "events/old.parquet").read() == b"an old lake object"
            assert st.get("broker").running() == []
        finally:
            st.down()

    # upgrade of the copy taken before the damage: the broker starts and offsets continue
    healthy = tmp_path / "healthy"
    healthy.mkdir()
    healthy.chmod(0o755)
    shutil.move(tmp_path / "healthy-s3", healthy / "s3")
    with environment(_test_env(healthy)) as s:
        st = Stack(s, only=["s3", "broker"])
        try:
            st.up()
            assert produce_batches(s, "t.old", 0, 1, 1) == [200]
            assert produce_batches(s, "t.old", 1, 1, 1) == [100]
        finally:
            st.down()
