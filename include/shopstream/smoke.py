"""Smoke checks that prove every service from inside Airflow, through the providers' hooks.

Each check is idempotent for a run id: re-running it rewrites the same row, object and message key.
"""

from __future__ import annotations

import json
import time

WAREHOUSE_CONN = "shopstream_warehouse"
S3_CONN = "shopstream_s3"
KAFKA_CONN = "shopstream_kafka"
KAFKA_CONSUMER_CONN = "shopstream_kafka_consumer"
SMOKE_TOPIC = "shopstream.smoke"


def check_warehouse(run_id: str) -> dict:
    """Upsert a row keyed by run id into ``ops.smoke`` with PostgresHook."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=WAREHOUSE_CONN)
    hook.run(
        [
            "create schema if not exists ops",
            "create table if not exists ops.smoke (run_id text primary key, checked_at timestamptz not null)",
            "insert into ops.smoke (run_id, checked_at) values (%(run_id)s, now()) "
            "on conflict (run_id) do update set checked_at = excluded.checked_at",
        ],
        parameters={"run_id": run_id},
        autocommit=False,
    )
    rows = hook.get_first("select count(*) from ops.smoke")[0]
    return {"table": "ops.smoke", "rows": rows}


def check_s3(run_id: str, bucket: str) -> dict:
    """Write and read back ``smoke/<run_id>.json`` with S3Hook (MinIO endpoint from the connection)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id=S3_CONN)
    key = f"smoke/{run_id}.json"
    hook.load_string(json.dumps({"run_id": run_id}), key=key, bucket_name=bucket, replace=True)
    body = json.loads(hook.read_key(key=key, bucket_name=bucket))
    if body.get("run_id") != run_id:
        raise RuntimeError(f"s3://{bucket}/{key} did not read back what was written: {body}")
    return {"object": f"s3://{bucket}/{key}"}


def check_kafka(run_id: str, timeout: float = 30.0) -> dict:
    """Produce a message keyed by run id with KafkaProducerHook and read it back at its offset."""
    from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook
    from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook
    from confluent_kafka import TopicPartition

    producer = KafkaProducerHook(kafka_config_id=KAFKA_CONN).get_producer()
    delivered: list = []
    producer.produce(
        SMOKE_TOPIC, key=run_id.encode(), value=json.dumps({"run_id": run_id}).encode(),
        on_delivery=lambda err, msg: delivered.append((err, msg)),
    )
    producer.flush(timeout)
    if not delivered or delivered[0][0] is not None:
        raise RuntimeError(f"message to {SMOKE_TOPIC} not delivered: {delivered}")
    msg = delivered[0][1]
    consumer = KafkaConsumerHook(topics=[SMOKE_TOPIC], kafka_config_id=KAFKA_CONSUMER_CONN).get_consumer()
    try:
        consumer.unsubscribe()
        consumer.assign([TopicPartition(SMOKE_TOPIC, msg.partition(), msg.offset())])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = consumer.poll(1.0)
            if got is None or got.error():
                continue
            if got.key() == run_id.encode():
                return {"topic": SMOKE_TOPIC, "partition": got.partition(), "offset": got.offset()}
    finally:
        consumer.close()
    raise RuntimeError(f"message {run_id!r} not read back from {SMOKE_TOPIC} within {timeout}s")


def check_mlflow(run_id: str, tracking_uri: str) -> dict:
    """Log a run (a param, a metric and an artifact) to the MLflow tracking server."""
    import mlflow

    from shopstream.training.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("shopstream-smoke")
    mlflow.set_experiment_tag(EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)   # the UI opens it on its runs
    with mlflow.start_run(run_name=f"smoke-{run_id}") as run:
        mlflow.log_param("airflow_run_id", run_id)
        mlflow.log_metric("ok", 1.0)
        mlflow.log_dict({"run_id": run_id}, "smoke.json")
    return {"mlflow_run_id": run.info.run_id}
