"""validate_batch: landed rows, envelopes, timestamp forms and every rejection reason."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pyarrow as pa
import pytest

from shopstream.events.schema import LANDED_SCHEMA, event_key, to_micros
from shopstream.events.validation import (
    REASON_CODES,
    RawMessage,
    Reason,
    from_kafka,
    parse_event_times,
    validate_batch,
    validate_message,
)

GOOD: dict[str, Any] = {
    "event_time": "2019-10-01 00:00:04 UTC",
    "event_type": "view",
    "product_id": 1004856,
    "category_id": 2053013555631882655,
    "category_code": "electronics.smartphone",
    "brand": "samsung",
    "price": 130.76,
    "user_id": 543272936,
    "user_session": "8187d148-3c41-46d4-b0c0-9c08cd9dc564",
}


def msg(value: Any, offset: int = 0) -> RawMessage:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return RawMessage(raw, "events", 2, offset)


def with_(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def without(name: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != name}


def test_valid_row_is_landed_with_key_and_coordinates() -> None:
    valid, rejected = validate_batch([msg(GOOD, offset=17)])
    assert rejected == []
    assert valid.schema == LANDED_SCHEMA
    row = valid.to_pylist()[0]
    t = datetime(2019, 10, 1, 0, 0, 4, tzinfo=UTC)
    assert row["event_time"] == t
    assert row["price"] == 130.76 and row["product_id"] == 1004856
    assert (row["src_topic"], row["src_partition"], row["src_offset"]) == ("events", 2, 17)
    assert row["event_key"] == event_key(to_micros(t), "view", 1004856, 543272936, GOOD["user_session"])


def test_optional_fields_empty_null_or_absent_land_as_null() -> None:
    values = [with_(brand="", category_code=""), with_(brand=None, category_code=None), without("brand")]
    valid, rejected = validate_batch([msg(v, i) for i, v in enumerate(values)])
    assert rejected == []
    assert valid["brand"].to_pylist() == [None, None, None]
    assert valid["category_code"].to_pylist() == [None, None, "electronics.smartphone"]


def test_kafka_connect_envelope_and_iso_timestamps_give_the_same_event_key() -> None:
    envelope = {"schema": {"type": "struct", "optional": False}, "payload": GOOD}
    iso = with_(event_time="2019-10-01T03:00:04+03:00")
    zulu = with_(event_time="2019-10-01T00:00:04Z", price=130)  # integral price is a number too
    valid, rejected = validate_batch(
        [msg(GOOD), msg(envelope, 1), msg(iso, 2), (orjson.dumps(zulu), "t", 0, 3)]
    )
    assert rejected == []
    assert len(set(valid["event_key"].to_pylist())) == 1
    assert set(valid["event_time"].to_pylist()) == {datetime(2019, 10, 1, 0, 0, 4, tzinfo=UTC)}
    assert valid["price"].to_pylist()[3] == 130.0


CASES = [
    (b'{"event_time": "2019-10-01', Reason.MALFORMED_JSON, "invalid JSON"),
    (b"", Reason.EMPTY_VALUE, "empty message value"),
    (None, Reason.TOMBSTONE, "null value (a tombstone"),
    (b"{" + b" " * 1_048_576 + b"}", Reason.TOO_LARGE, "value of 1,048,578 bytes is over the 1,048,576-byte limit"),
    (b"\xff\xfe", Reason.NOT_UTF8, "not UTF-8: byte 0xff at offset 0"),
    (b'{"event_type": "caf\xe9"}', Reason.NOT_UTF8, "byte 0xe9 at offset 19"),
    (b"[" * 2000 + b"]" * 2000, Reason.TOO_DEEP, "nested deeper than 1024 levels"),
    (b'{"price": NaN}', Reason.NON_FINITE_NUMBER, "NaN is not a JSON number"),
    (b'{"price": -Infinity}', Reason.NON_FINITE_NUMBER, "-Infinity is not a JSON number"),
    (b'{"price": 1e999}', Reason.NUMBER_OUT_OF_RANGE, "number '1e999' is out of range"),
    (b"[1, 2]", Reason.NOT_AN_OBJECT, "got array"),
    (b"null", Reason.NOT_AN_OBJECT, "got null"),
    ({"schema": {}, "payload": "text"}, Reason.NOT_AN_OBJECT, "envelope payload"),
    (without("user_id"), Reason.MISSING_FIELD, "user_id is missing"),
    (with_(price=None), Reason.MISSING_FIELD, "price is null"),
    (with_(user_session=""), Reason.MISSING_FIELD, "user_session is empty"),
    (with_(product_id="x"), Reason.WRONG_TYPE, "product_id: expected an integer, got string 'x'"),
    (with_(product_id="12"), Reason.WRONG_TYPE, "product_id: expected an integer, got string '12'"),
    (with_(category_id=1.5), Reason.WRONG_TYPE, "category_id: expected an integer, got float 1.5"),
    (with_(user_id=True), Reason.WRONG_TYPE, "user_id: expected an integer, got boolean True"),
    (with_(user_id=2**63), Reason.NUMBER_OUT_OF_RANGE, f"user_id: {2**63} is outside the int64 range"),
    (orjson.dumps(GOOD).replace(b'"product_id":1004856', b'"product_id":1180591620717411303424'),
     Reason.NUMBER_OUT_OF_RANGE, "product_id: 1.1805916207174113e+21 is outside the int64 range"),
    (with_(price=1e12), Reason.NUMBER_OUT_OF_RANGE, "price: 1000000000000.0 does not fit the warehouse"),
    (with_(user_session="abc\x00def"), Reason.NUL_CHARACTER, "user_session: 'abc\\x00def' contains a NUL"),
    (with_(brand="\x00"), Reason.NUL_CHARACTER, "brand: '\\x00' contains a NUL character"),
    (with_(price="abc"), Reason.WRONG_TYPE, "price: expected a number, got string 'abc'"),
    (with_(event_type=42), Reason.WRONG_TYPE, "event_type: expected a string, got int 42"),
    (with_(brand=123), Reason.WRONG_TYPE, "brand: expected a string or null, got int 123"),
    (with_(event_type="click"), Reason.UNKNOWN_EVENT_TYPE, "event_type: 'click' is not one of view"),
    (with_(price=-3.5), Reason.NEGATIVE_PRICE, "price: -3.5 is negative"),
    (with_(event_time="2019-13-01 00:00:00 UTC"), Reason.BAD_TIMESTAMP, "'2019-13-01 00:00:00 UTC'"),
    (with_(event_time="2019-02-30 00:00:00 UTC"), Reason.BAD_TIMESTAMP, "event_time: string '2019-02-30"),
    (with_(event_time="2019-10-01T00:00:04"), Reason.BAD_TIMESTAMP, "ISO-8601 with Z/offset"),
    (with_(event_time=""), Reason.BAD_TIMESTAMP, "event_time: string ''"),
    (with_(event_time=1569888004), Reason.BAD_TIMESTAMP, "event_time: int 1569888004"),
]


@pytest.mark.parametrize(("value", "reason", "detail"), CASES)
def test_rejection_reason_and_detail(value: Any, reason: Reason, detail: str) -> None:
    raw = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
    valid, rejected = validate_batch([RawMessage(raw, "events", 1, 99)])
    assert valid.num_rows == 0 and valid.schema == LANDED_SCHEMA
    [r] = rejected
    assert r.reason_code == reason.value
    assert detail in r.detail
    assert (r.payload, r.topic, r.partition, r.offset) == (raw, "events", 1, 99)
    # the reference validator says the same
    assert validate_message(raw)[1:] == (r.reason_code, r.detail)


def test_every_reason_code_is_covered() -> None:
    assert {reason.value for _, reason, _ in CASES} == set(REASON_CODES)


def test_mixed_batch_keeps_input_order_for_rows_and_rejections() -> None:
    values = [
        GOOD,
        with_(event_time="bad time"),
        b"{",
        with_(user_id=1),
        with_(price=-1),
        with_(user_id=2**64 - 1),
        with_(user_id=2),
    ]
    valid, rejected = validate_batch([msg(v, i) for i, v in enumerate(values)])
    assert valid["src_offset"].to_pylist() == [0, 3, 6]
    assert valid["user_id"].to_pylist() == [543272936, 1, 2]
    assert [(r.offset, r.reason_code) for r in rejected] == [
        (1, "bad_timestamp"),
        (2, "malformed_json"),
        (4, "negative_price"),
        (5, "number_out_of_range"),
    ]


def test_extra_fields_are_dropped_and_the_event_lands() -> None:
    valid, rejected = validate_batch([msg(with_(extra={"nested": [1, 2]}, note="x\x00y", amount=1e300))])
    assert rejected == [] and valid.num_rows == 1 and "extra" not in valid.column_names


def test_none_value_and_empty_batch() -> None:
    valid, rejected = validate_batch([(None, "events", 0, 5)])
    assert rejected[0].reason_code == "tombstone" and rejected[0].payload is None
    valid, rejected = validate_batch([])
    assert valid.num_rows == 0 and valid.schema == LANDED_SCHEMA and rejected == []


def test_from_kafka_skips_errors() -> None:
    def fake(value: bytes | None, offset: int, error: object = None) -> SimpleNamespace:
        return SimpleNamespace(
            value=lambda: value,
            topic=lambda: "events",
            partition=lambda: 0,
            offset=lambda: offset,
            error=lambda: error,
        )

    raw = from_kafka([fake(orjson.dumps(GOOD), 1), fake(None, 2, error="partition EOF")])
    assert raw == [RawMessage(orjson.dumps(GOOD), "events", 0, 1)]


def test_parse_event_times_vectorised_matches_scalar() -> None:
    values = [
        "2019-10-01 00:00:04 UTC",
        "2019-10-01T00:00:04Z",
        None,
        "2019-10-31 23:59:59 UTC",
        "2019-09-31 00:00:00 UTC",
    ]
    us, ok = parse_event_times(values)
    assert ok.tolist() == [True, True, False, True, False]
    t0 = to_micros(datetime(2019, 10, 1, 0, 0, 4, tzinfo=UTC))
    assert us[0] == us[1] == t0
    assert us[3] == to_micros(datetime(2019, 10, 31, 23, 59, 59, tzinfo=UTC))
    assert pa.array(us[ok], pa.int64()).null_count == 0


def _hostile_values() -> list[bytes | None]:
    """Every hostile class of input, each in a few forms, plus valid events in every accepted form."""
    good = orjson.dumps(GOOD)
    envelope = orjson.dumps({"schema": {"type": "struct"}, "payload": GOOD})
    return [
        None, b"", b" ", b"\x00", b"\xff", b"\xc3\x28", good[:-1] + b"\xff}", b"{" * 1500 + b"}" * 1500,
        b"[" * 1024 + b"]" * 1024, b"[" * 1025 + b"]" * 1025, b"NaN", b"Infinity", b"-1e999", b"1e400", b"2e308",
        b'{"price": Infinity}', good.replace(b"130.76", b"1e999"), good.replace(b"130.76", b"NaN"),
        good.replace(b"543272936", str(2**70).encode()), good.replace(b"543272936", str(2**64 - 1).encode()),
        good.replace(b"543272936", str(-(2**63) - 1).encode()), good.replace(b"543272936", b"-9223372036854775808"),
        good.replace(b"samsung", b"sam\\u0000sung"), good.replace(b"8187d148", b"\\u00008187d148"),
        good.replace(b'"view"', b'"vi\\u0000ew"'), good.replace(b"UTC", b"UTC\\u0000"),
        good.replace(b"130.76", b"99999999999"), good.replace(b"130.76", b"9999999999.99"), b'"\\ud800"',
        good, envelope, orjson.dumps(with_(extra="x" * 5000)), b"[]", b"{}", b"null", b"true", b"1",
        orjson.dumps({"schema": 1, "payload": None}), good + b" ", b" " + good, good + b"x",
        orjson.dumps(with_(event_time="2019-10-01T00:00:04.5+02:00")), orjson.dumps(with_(price=0)),
        orjson.dumps(with_(user_id=2**63 - 1, product_id=-(2**63))), b"{" + b" " * 2_000_000 + b"}",
    ]


def _generated_values() -> list[bytes]:
    from shopstream.events.generator import generate_all

    messages, _ = generate_all(3000, seed=5)
    return [v for _, v in messages]


def test_batch_equals_the_reference_validator() -> None:
    """Differential test: validate_batch == validate_message on every hostile class and generated traffic."""
    values = _hostile_values() + _generated_values()
    valid, rejected = validate_batch([(v, "t", 0, i) for i, v in enumerate(values)])
    rows = {r["src_offset"]: r for r in valid.to_pylist()}
    rejects = {r.offset: r for r in rejected}
    assert len(rows) + len(rejects) == len(values)
    for i, v in enumerate(values):
        ref = validate_message(v)
        if ref.row is None:
            assert i in rejects, (i, v[:80] if v else v, ref)
            assert (rejects[i].reason_code, rejects[i].detail) == (ref.reason, ref.detail), i
        else:
            assert i in rows, (i, v[:80], rejects.get(i))
            got = dict(rows[i])
            got["event_time"] = to_micros(got["event_time"])
            assert {k: got[k] for k in ref.row} == ref.row


def test_every_hostile_class_gets_its_reason() -> None:
    reasons = {validate_message(v).reason for v in _hostile_values()}
    assert reasons >= {"tombstone", "empty_value", "too_large", "not_utf8", "too_deep", "non_finite_number",
                       "number_out_of_range", "nul_character", "malformed_json", "not_an_object"}
    assert None in reasons  # and valid events among them land
