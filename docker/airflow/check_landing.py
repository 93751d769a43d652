"""Health check of the landing service: its consumer group has at least one live member.

Run by docker-compose as ``python /opt/shopstream/docker/airflow/check_landing.py``; exit 0 is healthy.
The broker and group id come from the shopstream settings (SHOPSTREAM_KAFKA__*), like the service's own.
"""

from __future__ import annotations

import sys

from confluent_kafka.admin import AdminClient

from shopstream.settings import get_settings


def main() -> int:
    kafka = get_settings().kafka
    admin = AdminClient(kafka.client_config())
    group = kafka.landing_group
    try:
        description = admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=10)
    except Exception as exc:  # any failure to describe the group means "not healthy"
        print(f"landing: cannot describe consumer group {group!r} at {kafka.bootstrap_servers}: {exc}")
        return 1
    members = len(description.members)
    print(f"landing: consumer group {group!r} is {description.state} with {members} member(s)")
    return 0 if members > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
