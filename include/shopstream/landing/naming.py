"""Deterministic lake object names.

An object's name comes from the hour partition of its rows and the topic, partition and offset range of
the batch it was cut from, so re-landing the same offsets rewrites the same object instead of adding one:

    events/year=2019/month=10/day=01/hour=00/events.raw+p0+00000000000000001000-00000000000000001999.parquet
    deadletter/year=2019/month=10/day=01/hour=00/events.raw+p0+...parquet   (hour of the Kafka timestamp)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import NamedTuple

EVENTS_PREFIX = "events"
DEADLETTER_PREFIX = "deadletter"
_NAME = re.compile(
    r"^(?P<prefix>[a-z]+)/year=(?P<y>\d{4})/month=(?P<m>\d{2})/day=(?P<d>\d{2})/hour=(?P<h>\d{2})/"
    r"(?P<topic>.+)\+p(?P<part>\d+)\+(?P<first>\d{20})-(?P<last>\d{20})\.parquet$"
)


class ObjectName(NamedTuple):
    prefix: str
    hour: datetime
    topic: str
    partition: int
    first_offset: int
    last_offset: int


def hour_path(hour: datetime) -> str:
    """``year=YYYY/month=MM/day=DD/hour=HH`` of a UTC hour."""
    h = hour.astimezone(UTC)
    return f"year={h.year:04d}/month={h.month:02d}/day={h.day:02d}/hour={h.hour:02d}"


def object_key(prefix: str, hour: datetime, topic: str, partition: int, first: int, last: int) -> str:
    """The lake key of the rows of ``hour`` cut from offsets ``first..last`` of ``topic``/``partition``."""
    return f"{prefix}/{hour_path(hour)}/{topic}+p{partition}+{first:020d}-{last:020d}.parquet"


def parse_key(key: str) -> ObjectName:
    """Inverse of :func:`object_key`; raises ValueError for a key that is not a landing object."""
    m = _NAME.match(key)
    if not m:
        raise ValueError(f"not a landing object key: {key!r}")
    hour = datetime(int(m["y"]), int(m["m"]), int(m["d"]), int(m["h"]), tzinfo=UTC)
    return ObjectName(m["prefix"], hour, m["topic"], int(m["part"]), int(m["first"]), int(m["last"]))
