"""Health check of a Kafka-consuming service: its consumer group has at least one live member.

Run by docker-compose as ``python /opt/shopstream/docker/airflow/check_landing.py [landing|features]``
(default ``landing``); exit 0 is healthy. The broker and group id come from the shopstream settings, like
the service's own: SHOPSTREAM_KAFKA__LANDING_GROUP for the landing service, SHOPSTREAM_SERVING__CONSUMER_GROUP
for the feature-store consumer.
"""

from __future__ import annotations

import sys

from confluent_kafka.admin import AdminClient

from shopstream.settings import Settings, get_settings

GROUPS = {
    "landing": lambda s: s.kafka.landing_group,
    "features": lambda s: s.serving.consumer_group,
}


def main(argv: list[str]) -> int:
    service = argv[0] if argv else "landing"
    if service not in GROUPS or len(argv) > 1:
        print(f"usage: check_landing.py [{'|'.join(GROUPS)}]")
        return 2
    settings: Settings = get_settings()
    kafka = settings.kafka
    group = GROUPS[service](settings)
    admin = AdminClient(kafka.client_config())
    try:
        description = admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=10)
    except Exception as exc:  # any failure to describe the group means "not healthy"
        print(f"{service}: cannot describe consumer group {group!r} at {kafka.bootstrap_servers}: {exc}")
        return 1
    members = len(description.members)
    print(f"{service}: consumer group {group!r} is {description.state} with {members} member(s)")
    return 0 if members > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
