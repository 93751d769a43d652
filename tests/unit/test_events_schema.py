"""The event contract: schemas, timestamp forms and the event key."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from shopstream.events.schema import (
    EVENT_FIELDS,
    EVENT_SCHEMA,
    LANDED_SCHEMA,
    REQUIRED_FIELDS,
    event_key,
    format_event_time,
    parse_event_time,
    to_micros,
)

T0 = datetime(2019, 10, 1, 0, 0, 4, tzinfo=UTC)
US0 = to_micros(T0)
SESSION = "26dd6e6e-4dac-4778-8d2c-92e149dab885"


def test_schemas() -> None:
    assert tuple(EVENT_SCHEMA.names) == EVENT_FIELDS
    assert LANDED_SCHEMA.names == [*EVENT_FIELDS, "event_key", "src_topic", "src_partition", "src_offset"]
    assert LANDED_SCHEMA.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert LANDED_SCHEMA.field("src_partition").type == pa.int32()
    assert LANDED_SCHEMA.field("src_offset").type == pa.int64()
    for name in ("product_id", "category_id", "user_id"):
        assert LANDED_SCHEMA.field(name).type == pa.int64()
    assert LANDED_SCHEMA.field("brand").nullable and LANDED_SCHEMA.field("category_code").nullable
    assert set(REQUIRED_FIELDS) == set(EVENT_FIELDS) - {"brand", "category_code"}


def test_event_key_definition_and_determinism() -> None:
    key = event_key(US0, "view", 44600062, 541312140, SESSION)
    raw = f"{US0}|view|44600062|541312140|{SESSION}".encode()
    assert key == hashlib.blake2b(raw, digest_size=16).hexdigest()
    assert len(key) == 32 and int(key, 16) >= 0
    assert key == event_key(US0, "view", 44600062, 541312140, SESSION)


def test_event_key_normalises_time_to_utc() -> None:
    moscow = T0.astimezone(timezone(timedelta(hours=3)))
    assert (
        event_key(moscow, "cart", 1, 2, "s")
        == event_key(T0, "cart", 1, 2, "s")
        == event_key(US0, "cart", 1, 2, "s")
    )
    with pytest.raises(ValueError, match="naive"):
        event_key(datetime(2019, 10, 1), "cart", 1, 2, "s")


@pytest.mark.parametrize(
    "change",
    [
        {"event_time": US0 + 1},
        {"event_type": "cart"},
        {"product_id": 44600063},
        {"user_id": 541312141},
        {"user_session": SESSION.upper()},
    ],
)
def test_event_key_changes_with_each_identifying_field(change: dict) -> None:
    base = {
        "event_time": US0,
        "event_type": "view",
        "product_id": 44600062,
        "user_id": 541312140,
        "user_session": SESSION,
    }
    assert event_key(**base) != event_key(**{**base, **change})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-10-01 00:00:04 UTC", T0),
        ("2019-10-01T00:00:04Z", T0),
        ("2019-10-01T03:00:04+03:00", T0),
        ("2019-09-30T20:00:04-04:00", T0),
        ("2019-10-01 00:00:04+00:00", T0),
        ("2019-10-01T00:00:04.250Z", T0 + timedelta(milliseconds=250)),
    ],
)
def test_parse_event_time_accepted_forms(text: str, expected: datetime) -> None:
    assert parse_event_time(text) == to_micros(expected)


@pytest.mark.parametrize(
    "text",
    [
        "2019-10-01T00:00:04",
        "2019-10-01",
        "2019-02-30 00:00:00 UTC",
        "2019-13-01 00:00:00 UTC",
        "2019-10-01 0:00:04 UTC",
        "01/10/2019 00:00:04",
        "yesterday",
        "",
        "2019-10-01 00:00:04 MSK",
        1569888004,
    ],
)
def test_parse_event_time_refuses(text: object) -> None:
    assert parse_event_time(text) is None  # type: ignore[arg-type]


def test_format_event_time_round_trip() -> None:
    assert format_event_time(US0) == "2019-10-01 00:00:04 UTC"
    assert parse_event_time(format_event_time(US0 + 999_999)) == US0
