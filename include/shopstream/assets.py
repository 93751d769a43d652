"""Airflow assets that connect the DAGs: landed data starts the data DAG, gold starts training.

``LANDED`` is watched: the landing service publishes one message per landed batch to
``SHOPSTREAM_KAFKA__LANDED_TOPIC`` and the triggerer's Kafka message-queue trigger turns each into an
asset event. ``GOLD_FEATURES`` is updated by the data DAG once gold passed its checks.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetWatcher

from shopstream.settings import get_settings

KAFKA_CONSUMER_CONN = "shopstream_kafka_consumer"

GOLD_FEATURES = Asset(name="shopstream_gold_features", uri="shopstream://warehouse/ml/cart_features")

# Updated by the training DAG when the gate moves alias `champion` (the serving side can reload on it).
CHAMPION_MODEL = Asset(name="shopstream_champion_model", uri="shopstream://mlflow/models/purchase-intent/champion")


def accept_landed(message: Any) -> bool:
    """apply_function of the watcher: any well-formed landed notification is an update."""
    import orjson

    try:
        body = orjson.loads(message.value())
    except (orjson.JSONDecodeError, TypeError):
        return False
    return bool(body.get("events"))


def landed_asset() -> Asset:
    """The lake's landed events, watched on the landed-notification topic."""
    from airflow.providers.apache.kafka.triggers.msg_queue import KafkaMessageQueueTrigger

    trigger = KafkaMessageQueueTrigger(
        topics=[get_settings().kafka.landed_topic],
        kafka_config_id=KAFKA_CONSUMER_CONN,
        apply_function="shopstream.assets.accept_landed",
        poll_interval=5,
    )
    return Asset(
        name="shopstream_landed_events", uri="shopstream://lake/events",
        watchers=[AssetWatcher(name="shopstream_landed_watcher", trigger=trigger)],
    )
