"""The event contract of the Kaggle "eCommerce behavior data from multi category store" data set.

One event is a JSON object with the fields

=============  ==========================================================================
event_time     timestamp, UTC; wire form ``"2019-10-01 00:00:04 UTC"`` (ISO-8601 with ``Z`` or
               an offset is accepted too and converted to UTC)
event_type     ``view`` | ``cart`` | ``remove_from_cart`` | ``purchase``
product_id     int64
category_id    int64
category_code  string or null, dotted hierarchy such as ``electronics.smartphone``; ``""`` -> null
brand          string or null; ``""`` -> null
price          float64 >= 0
user_id        int64
user_session   non-empty string (a UUID in the data set)
=============  ==========================================================================

Landed Parquet rows (:data:`LANDED_SCHEMA`) carry these fields (``event_time`` as
``timestamp[us, tz=UTC]``) plus ``event_key`` and the Kafka source coordinates ``src_topic``,
``src_partition`` and ``src_offset``.

``event_key`` identifies an event, not a message: it is the 32-hex-digit BLAKE2b-128 digest of the
UTF-8 string ``f"{event_time_us}|{event_type}|{product_id}|{user_id}|{user_session}"``, where
``event_time_us`` is the event time in integer microseconds since the Unix epoch, UTC. An exact re-send
of an event therefore gets the same key whatever its wire form (Kaggle or ISO timestamp, plain JSON or
a Kafka Connect envelope), and downstream deduplication and idempotent writes use it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pyarrow as pa

EVENT_TYPES: tuple[str, ...] = ("view", "cart", "remove_from_cart", "purchase")
EVENT_FIELDS: tuple[str, ...] = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)
#: Fields that must be present and non-null (``category_code`` and ``brand`` are optional).
REQUIRED_FIELDS: tuple[str, ...] = tuple(f for f in EVENT_FIELDS if f not in ("category_code", "brand"))
KEY_FIELDS: tuple[str, ...] = ("event_time", "event_type", "product_id", "user_id", "user_session")
SOURCE_FIELDS: tuple[str, ...] = ("src_topic", "src_partition", "src_offset")

KAGGLE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
EVENT_TIME_TYPE = pa.timestamp("us", tz="UTC")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_time", EVENT_TIME_TYPE, nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("product_id", pa.int64(), nullable=False),
        pa.field("category_id", pa.int64(), nullable=False),
        pa.field("category_code", pa.string()),
        pa.field("brand", pa.string()),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("user_session", pa.string(), nullable=False),
    ]
)
LANDED_SCHEMA = pa.schema(
    [
        *EVENT_SCHEMA,
        pa.field("event_key", pa.string(), nullable=False),
        pa.field("src_topic", pa.string(), nullable=False),
        pa.field("src_partition", pa.int32(), nullable=False),
        pa.field("src_offset", pa.int64(), nullable=False),
    ]
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware datetime (naive is refused)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: event times must carry a timezone")
    return (value - _EPOCH) // _US


def from_micros(us: int) -> datetime:
    """UTC datetime of epoch microseconds."""
    return _EPOCH + timedelta(microseconds=us)


def format_event_time(us: int) -> str:
    """Kaggle wire form (``"2019-10-01 00:00:04 UTC"``) of epoch microseconds (sub-seconds dropped)."""
    return from_micros(us).strftime(KAGGLE_TIME_FORMAT)


def parse_event_time(value: str) -> int | None:
    """Epoch microseconds (UTC) of a wire timestamp, or None when it is not an accepted form.

    Accepted: the Kaggle form ``YYYY-MM-DD HH:MM:SS UTC`` and ISO-8601 date-times with ``Z`` or a
    numeric offset (fractional seconds allowed). Naive ISO date-times and bare dates are refused.
    """
    if not isinstance(value, str) or len(value) < 16:
        return None
    try:
        if value.endswith(" UTC"):
            if len(value) != 23:
                return None
            dt = datetime.strptime(value, KAGGLE_TIME_FORMAT).replace(tzinfo=UTC)
        else:
            if value[10:11] not in ("T", "t", " "):
                return None
            dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None or dt.utcoffset() is None:
        return None
    return to_micros(dt)


def event_key(
    event_time: int | datetime, event_type: str, product_id: int, user_id: int, user_session: str
) -> str:
    """Deterministic 32-hex-digit key of an event (see the module docstring for the definition).

    ``event_time`` is epoch microseconds (UTC) or a timezone-aware datetime.
    """
    us = event_time if isinstance(event_time, int) else to_micros(event_time)
    raw = f"{us}|{event_type}|{product_id}|{user_id}|{user_session}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()
