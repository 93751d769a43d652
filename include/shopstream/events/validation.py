"""Batch validation of raw event messages into landed Arrow rows plus coded rejections.

Accepted values are UTF-8 JSON objects with the fields of :mod:`shopstream.events.schema`, either
plain or wrapped in a Kafka Connect JSON envelope ``{"schema": {...}, "payload": {...}}``. Extra
fields are ignored. Typing is strict (no coercion): ``product_id``, ``category_id`` and ``user_id``
must be JSON integers within int64 (``12`` yes; ``"12"`` and ``12.0`` are ``wrong_type``), ``price``
a JSON number. Numeric strings are not coerced because the contract is typed JSON: a producer sending
strings is broken and should be seen, and the Kaggle CSV reader converts its text columns before it
produces. ``category_code`` and ``brand`` may be absent, null or ``""`` (all land as null).

A message gets exactly one reason (stable codes, see :class:`Reason`), the first that applies in this
order:

1. the value as bytes: ``tombstone`` (a null value), ``empty_value``, ``too_large`` (over
   ``max_bytes``, ``SHOPSTREAM_KAFKA__MAX_EVENT_BYTES``: checked before parsing);
2. parsing: ``not_utf8``, ``too_deep`` (nested deeper than the parser's 1024 levels),
   ``non_finite_number`` (``NaN``/``Infinity``, which JSON does not have), ``number_out_of_range``
   (a number that is infinite as a double, such as ``1e999``), else ``malformed_json``;
3. ``not_an_object`` (also for an envelope whose payload is not one);
4. ``missing_field`` (absent or null required field, or an empty ``user_session``);
5. ``wrong_type``, or ``number_out_of_range`` for an id written as an integer too large to be one
   (``2**70``: the parser hands it over as a float);
6. ``unknown_event_type``; 7. ``negative_price``; 8. ``number_out_of_range`` for a price that does not fit
   the warehouse (>= 1e10); 9. ``bad_timestamp`` when ``event_time`` is not a string;
10. ``nul_character``: a NUL (U+0000) in a landed string, which PostgreSQL text cannot store;
11. ``number_out_of_range`` for an id outside int64; 12. ``bad_timestamp`` when ``event_time`` is neither
    ``"YYYY-MM-DD HH:MM:SS UTC"`` nor ISO-8601 with ``Z``/offset.

Each rejection's ``detail`` names the field and shows the offending value. Extra fields are accepted
and dropped (a producer adding a field does not lose its events).

:func:`validate_message` is the reference: one message at a time, the rules above written out plainly.
:func:`validate_batch` gives the same result for a batch fast: a typed C parse per message and the
rules on Arrow columns (:mod:`shopstream.events.columnar`), the reference only for what that path cannot
accept. :func:`validate_batch_rowwise` is the previous batch validator (one ``orjson.loads`` plus a few
dict lookups and type checks per message), kept for the benchmark. Differential tests hold all three to
the same rows, reasons and details.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from itertools import compress
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from shopstream.events.schema import (
    EVENT_TIME_TYPE,
    EVENT_TYPES,
    INT64_MAX,
    INT64_MIN,
    KAGGLE_TIME_FORMAT,
    LANDED_SCHEMA,
    REQUIRED_FIELDS,
    event_key,
    parse_event_time,
)


class Reason(StrEnum):
    """Stable rejection reason codes (the values are what lands in quarantine tables)."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    NEGATIVE_PRICE = "negative_price"
    BAD_TIMESTAMP = "bad_timestamp"
    TOMBSTONE = "tombstone"
    EMPTY_VALUE = "empty_value"
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    TOO_DEEP = "too_deep"
    NON_FINITE_NUMBER = "non_finite_number"
    NUMBER_OUT_OF_RANGE = "number_out_of_range"
    NUL_CHARACTER = "nul_character"


REASON_CODES: tuple[str, ...] = tuple(r.value for r in Reason)
#: the default of ``SHOPSTREAM_KAFKA__MAX_EVENT_BYTES``: an event is a few hundred bytes
MAX_EVENT_BYTES = 1_048_576
#: prices must fit the warehouse's numeric(12, 2)
PRICE_LIMIT = 1e10


class RawMessage(NamedTuple):
    """One consumed message: value bytes and its Kafka coordinates (plain 4-tuples work the same)."""

    value: bytes | None
    topic: str = ""
    partition: int = 0
    offset: int = -1


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that failed validation, with its raw payload and source coordinates."""

    reason_code: str
    detail: str
    payload: bytes | None  # None for a tombstone
    topic: str
    partition: int
    offset: int


class ValidationResult(NamedTuple):
    """``valid`` rows in :data:`LANDED_SCHEMA`, in input order; ``rejected`` in input order."""

    valid: pa.Table
    rejected: list[Rejection]


def from_kafka(messages: Iterable[Any]) -> list[RawMessage]:
    """Adapt confluent-kafka ``Message`` objects, skipping those that carry an error."""
    return [
        RawMessage(m.value(), m.topic(), m.partition(), m.offset()) for m in messages if m.error() is None
    ]


_TYPES = frozenset(EVENT_TYPES)
_KAGGLE_RE = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]) ([01]\d|2[0-3]):[0-5]\d:[0-5]\d UTC$"
_INT_FIELDS = ("product_id", "category_id", "user_id")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _missing_detail(obj: dict) -> str:
    for name in REQUIRED_FIELDS:
        if name not in obj:
            return f"{name} is missing"
        if obj[name] is None:
            return f"{name} is null"
    return "user_session is empty"


def _wrong_type(obj: dict) -> tuple[Reason, str]:
    """The first field of the wrong type; an id the parser could only read as a float because it is an
    integer far outside int64 (``2**70``) is ``number_out_of_range`` instead."""
    for name in _INT_FIELDS:
        v = obj[name]
        if type(v) is not int:
            if type(v) is float and abs(v) >= 2.0**63:
                return Reason.NUMBER_OUT_OF_RANGE, f"{name}: {_show(v)} is outside the int64 range"
            return Reason.WRONG_TYPE, f"{name}: expected an integer, got {_type_name(v)} {_show(v)}"
    price = obj["price"]
    if type(price) is not float and type(price) is not int:
        return Reason.WRONG_TYPE, f"price: expected a number, got {_type_name(price)} {_show(price)}"
    for name in ("event_type", "user_session"):
        if type(obj[name]) is not str:
            return Reason.WRONG_TYPE, f"{name}: expected a string, got {_type_name(obj[name])} {_show(obj[name])}"
    for name in ("category_code", "brand"):
        v = obj.get(name)
        if v is not None and type(v) is not str:
            return Reason.WRONG_TYPE, f"{name}: expected a string or null, got {_type_name(v)} {_show(v)}"
    return Reason.WRONG_TYPE, "unknown type error"


def _value_reason(value: Any, max_bytes: int) -> tuple[Reason, str] | None:
    """Checks on the raw value, before parsing (step 1)."""
    if value is None:
        return Reason.TOMBSTONE, "null value (a tombstone, i.e. a delete marker, not an event)"
    if len(value) == 0:
        return Reason.EMPTY_VALUE, "empty message value"
    if len(value) > max_bytes:
        return Reason.TOO_LARGE, (f"value of {len(value):,} bytes is over the {max_bytes:,}-byte limit of an event "
                                  "(SHOPSTREAM_KAFKA__MAX_EVENT_BYTES)")
    return None


class _NonFinite(ValueError):
    pass


class _OutOfRange(ValueError):
    pass


def _refuse_constant(name: str) -> float:
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    f = float(text)
    if math.isinf(f):
        raise _OutOfRange(text)
    return f


def _parse_failure(value: bytes, exc: Exception) -> tuple[Reason, str]:
    """Why the fast parser refused a value (step 2); rare, so the standard library tells the cases apart."""
    value = bytes(value)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as e:
        return Reason.NOT_UTF8, f"not UTF-8: byte 0x{value[e.start]:02x} at offset {e.start} ({e.reason})"
    if "depth limit" in str(exc):
        return Reason.TOO_DEEP, "JSON nested deeper than 1024 levels"
    try:
        json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NonFinite as e:
        return Reason.NON_FINITE_NUMBER, f"{e.args[0]} is not a JSON number (JSON has no NaN or Infinity)"
    except _OutOfRange as e:
        return Reason.NUMBER_OUT_OF_RANGE, f"number {_show(e.args[0])} is out of range (infinite as a double)"
    except (ValueError, RecursionError):
        pass
    return Reason.MALFORMED_JSON, f"invalid JSON: {exc}"


def _nul_detail(*named: tuple[str, str | None]) -> str | None:
    """Which landed string holds a NUL character, if any (step 10)."""
    for name, v in named:
        if v is not None and "\x00" in v:
            return f"{name}: {_show(v)} contains a NUL character (U+0000), which PostgreSQL text cannot store"
    return None


def _bad_time_detail(value: Any) -> str:
    return (
        f"event_time: {_type_name(value)} {_show(value)} is not 'YYYY-MM-DD HH:MM:SS UTC' "
        "or ISO-8601 with Z/offset"
    )


def parse_event_times(values: list[str | None] | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised parse of wire timestamps: (epoch microseconds int64, ok mask).

    The Kaggle form is parsed by Arrow (shape checked by regex, day-of-month overflow refused);
    anything else falls back to :func:`~shopstream.events.schema.parse_event_time` per value.
    """
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    arr = values if isinstance(values, pa.Array) else pa.array(values, pa.string())
    shaped = pc.match_substring_regex(arr, _KAGGLE_RE)
    parsed = pc.strptime(arr, format=KAGGLE_TIME_FORMAT, unit="us", error_is_null=True)
    # strptime normalises 2019-02-30 to 2019-03-02: the parsed day must equal the written one.
    written_day = pc.cast(pc.if_else(shaped, pc.utf8_slice_codeunits(arr, 8, 10), "0"), pa.int64())
    ok_arr = pc.and_kleene(shaped, pc.equal(pc.day(parsed), written_day))
    ok = ok_arr.fill_null(False).to_numpy(zero_copy_only=False)
    us = parsed.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).copy()
    if not ok.all():
        for i in np.flatnonzero(~ok).tolist():
            v = arr[i].as_py()
            parsed_us = parse_event_time(v) if v is not None else None
            if parsed_us is not None:
                us[i] = parsed_us
                ok[i] = True
    return us, ok


def _int_column(values: list[int]) -> tuple[pa.Array | None, np.ndarray | None]:
    """int64 array, or (None, overflow mask) when some value is outside int64."""
    try:
        return pa.array(values, pa.int64()), None
    except (OverflowError, pa.ArrowInvalid):
        return None, np.fromiter((not INT64_MIN <= v <= INT64_MAX for v in values), bool, len(values))


def _price_range_detail(price: float) -> str:
    return f"price: {price!r} does not fit the warehouse (numeric(12, 2): below {PRICE_LIMIT:.0e})"


class Checked(NamedTuple):
    """One message's outcome: the landed ``row`` (fields of :data:`LANDED_SCHEMA` without the source
    coordinates, ``event_time`` in epoch microseconds) or the ``reason`` and ``detail`` of its rejection."""

    row: dict[str, Any] | None
    reason: str | None = None
    detail: str | None = None


def validate_message(value: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> Checked:
    """The reference validator: one message, the rules of the module docstring in their order.

    :func:`validate_batch` must give the same rows, reasons and details (a differential test checks it).
    """

    def no(reason: Reason, detail: str) -> Checked:
        return Checked(None, reason.value, detail)

    problem = _value_reason(value, max_bytes)
    if problem:
        return no(*problem)
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return no(*_parse_failure(value, exc))
    if type(obj) is not dict:
        return no(Reason.NOT_AN_OBJECT, f"expected a JSON object, got {_type_name(obj)}")
    if "payload" in obj and "schema" in obj:
        obj = obj["payload"]
        if type(obj) is not dict:
            return no(Reason.NOT_AN_OBJECT, f"envelope payload: expected a JSON object, got {_type_name(obj)}")
    if any(obj.get(name) is None for name in REQUIRED_FIELDS) or obj["user_session"] == "":
        return no(Reason.MISSING_FIELD, _missing_detail(obj))
    ids = {name: obj[name] for name in _INT_FIELDS}
    etype, sess, price, et = obj["event_type"], obj["user_session"], obj["price"], obj["event_time"]
    code, brand = obj.get("category_code"), obj.get("brand")
    if (
        any(type(v) is not int for v in ids.values())
        or type(price) not in (int, float)
        or type(etype) is not str
        or type(sess) is not str
        or any(v is not None and type(v) is not str for v in (code, brand))
    ):
        return no(*_wrong_type(obj))
    if etype not in EVENT_TYPES:
        return no(Reason.UNKNOWN_EVENT_TYPE, f"event_type: {_show(etype)} is not one of {', '.join(EVENT_TYPES)}")
    if price < 0:
        return no(Reason.NEGATIVE_PRICE, f"price: {price!r} is negative")
    if price >= PRICE_LIMIT:
        return no(Reason.NUMBER_OUT_OF_RANGE, _price_range_detail(price))
    if type(et) is not str:
        return no(Reason.BAD_TIMESTAMP, _bad_time_detail(et))
    nul = _nul_detail(("event_type", etype), ("user_session", sess), ("category_code", code), ("brand", brand),
                      ("event_time", et))
    if nul:
        return no(Reason.NUL_CHARACTER, nul)
    for name, v in ids.items():
        if not INT64_MIN <= v <= INT64_MAX:
            return no(Reason.NUMBER_OUT_OF_RANGE, f"{name}: {v} is outside the int64 range")
    us = parse_event_time(et)
    if us is None:
        return no(Reason.BAD_TIMESTAMP, _bad_time_detail(et))
    return Checked({
        "event_time": us, "event_type": etype, **ids, "category_code": code or None, "brand": brand or None,
        "price": float(price), "user_session": sess,
        "event_key": event_key(us, etype, ids["product_id"], ids["user_id"], sess),
    })


def validate_batch(
    messages: Iterable[RawMessage | tuple[bytes | None, str, int, int]], max_bytes: int = MAX_EVENT_BYTES
) -> ValidationResult:
    """Validate ``(value, topic, partition, offset)`` messages into landed rows and rejections.

    Values over ``max_bytes`` are rejected unparsed (``too_large``). The result equals
    :func:`validate_message` applied to each message. Columnar: see :mod:`shopstream.events.columnar`.
    """
    from shopstream.events.columnar import validate_columns

    messages = list(messages)
    if not messages:
        return validate_columns([], "", 0, [], max_bytes)
    values, topics, partitions, offsets = (list(c) for c in zip(*messages, strict=True))
    return validate_columns(values, topics, partitions, offsets, max_bytes)


def validate_batch_rowwise(
    messages: Iterable[RawMessage | tuple[bytes | None, str, int, int]], max_bytes: int = MAX_EVENT_BYTES
) -> ValidationResult:
    """The previous batch validator (a Python loop of checks per message), kept as the benchmark's "old" row.

    The same result as :func:`validate_batch`.
    """
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    types_ok = _TYPES
    rejected: list[tuple[int, Rejection]] = []
    times: list[str] = []
    etypes: list[str] = []
    pids: list[int] = []
    cids: list[int] = []
    codes: list[str | None] = []
    brands: list[str | None] = []
    prices: list[float] = []
    uids: list[int] = []
    sessions: list[str] = []
    topics: list[str] = []
    parts: list[int] = []
    offsets: list[int] = []
    payloads: list[Any] = []
    index: list[int] = []

    def reject(i: int, reason: Reason, detail: str, value: Any, topic: str, part: int, off: int) -> None:
        payload = value if type(value) is bytes or value is None else bytes(value)
        rejected.append((i, Rejection(reason.value, detail, payload, topic, part, off)))

    for i, (value, topic, part, off) in enumerate(messages):
        if not value or len(value) > max_bytes:
            reason, detail = _value_reason(value, max_bytes)
            reject(i, reason, detail, value, topic, part, off)
            continue
        try:
            obj = loads(value)
        except decode_error as exc:
            reject(i, *_parse_failure(value, exc), value, topic, part, off)
            continue
        if type(obj) is not dict:
            reject(
                i,
                Reason.NOT_AN_OBJECT,
                f"expected a JSON object, got {_type_name(obj)}",
                value,
                topic,
                part,
                off,
            )
            continue
        if "payload" in obj and "schema" in obj:
            obj = obj["payload"]
            if type(obj) is not dict:
                reject(
                    i,
                    Reason.NOT_AN_OBJECT,
                    f"envelope payload: expected a JSON object, got {_type_name(obj)}",
                    value,
                    topic,
                    part,
                    off,
                )
                continue
        get = obj.get
        et = get("event_time")
        etype = get("event_type")
        pid = get("product_id")
        cid = get("category_id")
        price = get("price")
        uid = get("user_id")
        sess = get("user_session")
        if (
            et is None
            or etype is None
            or pid is None
            or cid is None
            or price is None
            or uid is None
            or sess is None
            or sess == ""
        ):
            reject(i, Reason.MISSING_FIELD, _missing_detail(obj), value, topic, part, off)
            continue
        code = get("category_code")
        brand = get("brand")
        if (
            type(pid) is not int
            or type(cid) is not int
            or type(uid) is not int
            or (type(price) is not float and type(price) is not int)
            or type(etype) is not str
            or type(sess) is not str
            or (code is not None and type(code) is not str)
            or (brand is not None and type(brand) is not str)
        ):
            reject(i, *_wrong_type(obj), value, topic, part, off)
            continue
        if etype not in types_ok:
            reject(
                i,
                Reason.UNKNOWN_EVENT_TYPE,
                f"event_type: {_show(etype)} is not one of {', '.join(EVENT_TYPES)}",
                value,
                topic,
                part,
                off,
            )
            continue
        if price < 0:
            reject(i, Reason.NEGATIVE_PRICE, f"price: {price!r} is negative", value, topic, part, off)
            continue
        if price >= PRICE_LIMIT:
            reject(i, Reason.NUMBER_OUT_OF_RANGE, _price_range_detail(price), value, topic, part, off)
            continue
        if type(et) is not str:
            reject(i, Reason.BAD_TIMESTAMP, _bad_time_detail(et), value, topic, part, off)
            continue
        if "\x00" in sess or "\x00" in et or (code and "\x00" in code) or (brand and "\x00" in brand):
            detail = _nul_detail(("event_type", etype), ("user_session", sess), ("category_code", code),
                                 ("brand", brand), ("event_time", et))
            reject(i, Reason.NUL_CHARACTER, detail, value, topic, part, off)
            continue
        times.append(et)
        etypes.append(etype)
        pids.append(pid)
        cids.append(cid)
        codes.append(code or None)
        brands.append(brand or None)
        prices.append(price)
        uids.append(uid)
        sessions.append(sess)
        topics.append(topic)
        parts.append(part)
        offsets.append(off)
        payloads.append(value)
        index.append(i)

    # Bulk phase: int64 ranges, then timestamps (in this order of precedence), the checks that need columns.
    us, keep = parse_event_times(times)
    bulk_reasons: dict[int, tuple[Reason, str]] = {}
    int_arrays = {}
    for name, values in zip(_INT_FIELDS, (pids, cids, uids), strict=True):
        arr, overflow = _int_column(values)
        int_arrays[name] = arr
        if overflow is not None:
            for j in np.flatnonzero(overflow).tolist():
                bulk_reasons.setdefault(j, (Reason.NUMBER_OUT_OF_RANGE, f"{name}: {values[j]} is outside the int64 range"))
            keep &= ~overflow
    if not keep.all():
        for j in np.flatnonzero(~keep).tolist():
            bulk_reasons.setdefault(j, (Reason.BAD_TIMESTAMP, _bad_time_detail(times[j])))
    if bulk_reasons:
        for j, (reason, detail) in bulk_reasons.items():
            reject(index[j], reason, detail, payloads[j], topics[j], parts[j], offsets[j])
        rejected.sort(key=lambda r: r[0])
        mask = keep.tolist()
        us = us[keep]
        columns_kept = [
            list(compress(col, mask))
            for col in (etypes, pids, cids, codes, brands, prices, uids, sessions, topics, parts, offsets)
        ]
        etypes, pids, cids, codes, brands, prices, uids, sessions, topics, parts, offsets = columns_kept
        int_arrays = {
            n: pa.array(v, pa.int64()) for n, v in zip(_INT_FIELDS, (pids, cids, uids), strict=True)
        }

    blake2b = hashlib.blake2b
    keys = [
        blake2b(f"{t}|{e}|{p}|{u}|{s}".encode(), digest_size=16).hexdigest()
        for t, e, p, u, s in zip(us.tolist(), etypes, pids, uids, sessions, strict=True)
    ]
    columns = [
        pa.array(us, pa.int64()).cast(EVENT_TIME_TYPE),
        pa.array(etypes, pa.string()),
        int_arrays["product_id"],
        int_arrays["category_id"],
        pa.array(codes, pa.string()),
        pa.array(brands, pa.string()),
        pa.array(prices, pa.float64()),
        int_arrays["user_id"],
        pa.array(sessions, pa.string()),
        pa.array(keys, pa.string()),
        pa.array(topics, pa.string()),
        pa.array(parts, pa.int32()),
        pa.array(offsets, pa.int64()),
    ]
    table = pa.Table.from_arrays(columns, schema=LANDED_SCHEMA)
    return ValidationResult(table, [r for _, r in rejected])
