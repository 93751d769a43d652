"""Differential tests: the columnar validator, the previous row-wise one and the reference give the same
decisions, reasons, details and Parquet rows, on the generator's full fault mix and on a hypothesis corpus."""

from __future__ import annotations

import io
import json
from datetime import datetime

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopstream.events.columnar import event_keys, validate_columns
from shopstream.events.generator import generate_all
from shopstream.events.schema import LANDED_SCHEMA, event_key, to_micros
from shopstream.events.validation import (
    ValidationResult,
    validate_batch,
    validate_batch_rowwise,
    validate_message,
)
from shopstream.landing.writer import event_objects
from tests.unit.test_events_validation import GOOD  # one valid event, shared by both validators' tests


def parquet_rows(table: pa.Table) -> list[dict]:
    """The rows a reader gets back from the landed objects of one partition's valid rows."""
    if table.num_rows == 0:
        return []
    return [row for o in event_objects(table, "t", 0, 0, 1) for row in pq.read_table(io.BytesIO(o.data)).to_pylist()]


def assert_same(values: list[bytes | None], max_bytes: int = 1_048_576) -> ValidationResult:
    """Columnar == row-wise == reference, message by message, and the same Parquet rows."""
    offsets = list(range(100, 100 + len(values)))
    new = validate_columns(values, "t", 0, offsets, max_bytes)
    old = validate_batch_rowwise([(v, "t", 0, o) for v, o in zip(values, offsets, strict=True)], max_bytes)
    assert new.valid.schema == LANDED_SCHEMA
    assert new.valid.to_pylist() == old.valid.to_pylist()
    assert new.rejected == old.rejected
    assert parquet_rows(new.valid) == parquet_rows(old.valid)
    rows = {r["src_offset"]: r for r in new.valid.to_pylist()}
    rejects = {r.offset: r for r in new.rejected}
    assert len(rows) + len(rejects) == len(values)
    for off, v in zip(offsets, values, strict=True):
        ref = validate_message(v, max_bytes)
        if ref.row is None:
            assert (rejects[off].reason_code, rejects[off].detail, rejects[off].payload) == (ref.reason, ref.detail, v)
        else:
            got = dict(rows[off])
            got["event_time"] = to_micros(got["event_time"])
            assert {k: got[k] for k in ref.row} == ref.row
    return new


def test_generator_full_fault_mix() -> None:
    """Every fault the generator injects (10% invalid of every reason, re-sends, late events), two seeds."""
    for seed in (3, 11):
        messages, truth = generate_all(3000, seed=seed)
        res = assert_same([v for _, v in messages])
        assert res.valid.num_rows == truth.valid_messages and len(res.rejected) == truth.invalid
        assert {r.reason_code for r in res.rejected} == {k for k, n in truth.invalid_by_reason.items() if n}


def test_size_limit_and_other_forms_of_valid_events() -> None:
    good = orjson.dumps(GOOD)
    values = [
        good,
        b" \n" + json.dumps(GOOD, indent=2).encode() + b"\n",  # whitespace and other key separators
        orjson.dumps(dict(reversed(GOOD.items()))),  # another key order
        orjson.dumps({"schema": {"type": "struct"}, "payload": GOOD}),  # envelope: the reference lands it
        orjson.dumps({**GOOD, "extra": [1, {"a": None}]}),  # extra field: the reference drops it
        orjson.dumps({k: v for k, v in GOOD.items() if k != "brand"}),
        orjson.dumps({**GOOD, "event_time": "2019-10-01T00:00:04.250+02:00"}),
        orjson.dumps({**GOOD, "price": 0, "brand": "", "category_code": None}),
        orjson.dumps({**GOOD, "price": -0.0}),
        good.replace(b"130.76", b"-0"),
        good.replace(b"130.76", b"9999999999.999999"),
        good.replace(b"130.76", b"9999999999.9999999"),  # rounds to 1e10: out of range
        good.replace(b"samsung", "\u00e9\u4e2d\U0001f600".encode()),
        good.replace(b"samsung", b"\\u00e9\\ud83d\\ude00"),
        good.replace(b"samsung", b"sam\\\"sung"),
        good.replace(b"543272936", b"9223372036854775807"),
        good.replace(b"543272936", b"-9223372036854775808"),
        good.replace(b"543272936", b"9223372036854775808"),
        good.replace(b"543272936", b"18446744073709551616"),
        good.replace(b'"user_session":"8187d148', b'"user_session":"8187d148","user_session":"x'),  # last wins
        good + b" ",
    ]
    res = assert_same(values, max_bytes=len(good) + 100)
    assert res.valid.num_rows >= 15
    assert_same([good, good + b" " * 10, orjson.dumps({**GOOD, "brand": "x" * 50})], max_bytes=len(good) + 5)


def test_event_keys_of_columns_equal_the_scalar_definition() -> None:
    us = pa.array([0, -1, 1569888004000000], pa.int64())
    args = (pa.array(["view", "cart", "purchase"]), pa.array([1, -(2**63), 2**63 - 1], pa.int64()),
            pa.array([5, 6, 7], pa.int64()), pa.array(["s", "é\u4e2d", "a|b"]))
    got = event_keys(us, *args).to_pylist()
    assert got == [event_key(*row) for row in zip(us.to_pylist(), *(a.to_pylist() for a in args), strict=True)]
    assert event_keys(*(a[:0] for a in (us, *args))).to_pylist() == []


def test_validate_batch_is_the_columnar_validator() -> None:
    msgs = [(orjson.dumps(GOOD), "a", 1, 5), (b"{", "b", 2, 9), (orjson.dumps(GOOD), "c", 3, 7)]
    res = validate_batch(msgs)
    assert res.valid.select(["src_topic", "src_partition", "src_offset"]).to_pylist() == [
        {"src_topic": "a", "src_partition": 1, "src_offset": 5}, {"src_topic": "c", "src_partition": 3, "src_offset": 7}]
    assert [(r.topic, r.partition, r.offset, r.reason_code) for r in res.rejected] == [("b", 2, 9, "malformed_json")]


# ------------------------------------------------------------------ fuzz corpus
_scalars = st.one_of(
    st.none(), st.booleans(), st.just(""), st.just(0), st.just(-0.0),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**53 + 1, 10**10, 10**10 - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e10, 9999999999.99, 1e-320, -1e-320, 0.1, 1.5, 1e308]),
    st.text(max_size=12), st.sampled_from(["a\x00b", "\x00", "é", "\U0001f600", "view", "cart", "purchase",
                                            "remove_from_cart", "VIEW", "2019-10-01 00:00:04 UTC"]),
)
_values = st.one_of(_scalars, st.lists(_scalars, max_size=2), st.dictionaries(st.text(max_size=3), _scalars, max_size=2))
_times = st.one_of(
    st.datetimes(min_value=datetime(1000, 1, 1)).map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S UTC")),
    st.sampled_from(["2019-02-30 10:00:00 UTC", "2019-02-28 10:00:00 UTC", "2020-02-29 23:59:59 UTC",
                     "2019-13-01 00:00:00 UTC", "2019-10-01 24:00:00 UTC", "2019-10-01 00:00:60 UTC",
                     "0001-01-01 00:00:00 UTC", "9999-12-31 23:59:59 UTC", "2019-10-01T00:00:04Z",
                     "2019-10-01T00:00:04+14:00", "2019-10-01T00:00:04", " 2019-10-01 00:00:04 UTC",
                     "2019-10-01 00:00:04 utc", "2019-1-01 00:00:04 UTC", "+2019-10-01 00:00:04 UTC"]),
)
_field_values = {
    "event_time": _times, "event_type": st.sampled_from(["view", "cart", "remove_from_cart", "purchase"]),
    "product_id": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "category_id": st.integers(min_value=0, max_value=2**63 - 1),
    "category_code": st.one_of(st.none(), st.just(""), st.text(max_size=20)),
    "brand": st.one_of(st.none(), st.just(""), st.text(max_size=10)),
    "price": st.one_of(st.floats(min_value=0, max_value=1e10, allow_nan=False), st.integers(0, 10**11)),
    "user_id": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "user_session": st.one_of(st.uuids().map(str), st.text(min_size=1, max_size=40)),
}


@st.composite
def _message(draw: st.DrawFn) -> bytes | None:
    """A mostly valid event, then maybe broken: a field replaced by anything, dropped, an extra one, another key
    order, an envelope, another serialiser, or bytes cut, doubled or replaced."""
    event = {k: draw(s) for k, s in _field_values.items()}
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from([*event, "extra"]))
        action = draw(st.sampled_from(["replace", "drop", "keep"]))
        if action == "replace":
            event[name] = draw(_values)
        elif action == "drop":
            event.pop(name, None)
    if draw(st.booleans()):
        event = dict(draw(st.permutations(list(event.items()))))
    if draw(st.integers(0, 9)) == 0:
        event = {"schema": draw(_values), "payload": event}
    form = draw(st.sampled_from(["orjson", "orjson", "orjson", "json", "json-indent"]))
    try:
        raw = (orjson.dumps(event) if form == "orjson" else json.dumps(
            event, indent=2 if form == "json-indent" else None, ensure_ascii=draw(st.booleans())).encode(
                "utf-8", "surrogatepass"))
    except (TypeError, ValueError, orjson.JSONEncodeError):
        raw = repr(event).encode("utf-8", "surrogatepass")
    mutation = draw(st.integers(0, 11))
    if mutation == 0 and raw:
        cut = draw(st.integers(0, len(raw) - 1))
        raw = raw[:cut] + bytes([draw(st.integers(0, 255))]) + raw[cut + 1:]
    elif mutation == 1:
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif mutation == 2:
        return draw(st.one_of(st.none(), st.binary(max_size=30)))
    return raw


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_message(), min_size=1, max_size=25))
def test_fuzz_corpus_same_decisions_reasons_and_rows(values: list[bytes | None]) -> None:
    assert_same(values)
