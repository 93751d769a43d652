"""Columnar validation of a fetched batch: one typed C parse per message, the contract's rules on Arrow columns.

The fast path parses every value with a ``msgspec`` decoder typed by the contract (a plain event object:
the nine fields, ids JSON integers within int64, ``price`` a number, ``event_type`` one of the four types,
``category_code``/``brand`` a string or null, no other field), straight from bytes into a slotted struct with
no per-message Python code. The rules a type cannot hold are then applied to whole columns with
``pyarrow.compute``: non-empty ``user_session``, ``0 <= price < 1e10``, no NUL character in a landed string,
timestamps parsed vectorised, the size limit.

Everything the fast path cannot classify as a valid event (a failed parse, a rule failed, an envelope, an
extra field) goes to the reference validator
(:func:`~shopstream.events.validation.validate_message`), which says why it is rejected, or lands it in its
other accepted form. The fast path only ever accepts; every rejection's reason and detail therefore come
from the reference, and a differential test holds the two to the same rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from operator import attrgetter
from typing import Annotated, Literal

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopstream.events.schema import EVENT_TIME_TYPE, INT64_MAX, INT64_MIN, LANDED_SCHEMA
from shopstream.events.validation import (
    MAX_EVENT_BYTES,
    PRICE_LIMIT,
    Rejection,
    ValidationResult,
    parse_event_times,
    validate_message,
)

_Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]


class _Event(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A plain event object as the fast path accepts it (any field order; optional fields may be absent)."""

    event_time: str
    event_type: Literal["view", "cart", "remove_from_cart", "purchase"]
    product_id: _Int64
    category_id: _Int64
    price: float
    user_id: _Int64
    user_session: str
    category_code: str | None = None
    brand: str | None = None


_decode = msgspec.json.Decoder(_Event).decode
_FIELDS = ("event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price", "user_id",
           "user_session")  # LANDED_SCHEMA's order
_GETTERS = tuple(attrgetter(f) for f in _FIELDS)


def _parse(values: Sequence[bytes | None]) -> tuple[list[int], list[_Event]]:
    """Indexes and structs of the values the typed decoder accepts (the only per-message Python: a call)."""
    idx: list[int] = []
    events: list[_Event] = []
    take, keep, decode = idx.append, events.append, _decode
    for i, v in enumerate(values):
        try:
            keep(decode(v))
        except Exception:  # noqa: BLE001, S112 - any refusal (type, UTF-8, syntax, None) goes to the reference
            continue
        take(i)
    return idx, events


def _nul(arr: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.match_substring(arr, "\x00"), False).to_numpy(zero_copy_only=False)


def _empty_to_null(a: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(a, ""), pa.scalar(None, pa.string()), a)


def event_keys(us: pa.Array, etypes: pa.Array, pids: pa.Array, uids: pa.Array, sessions: pa.Array) -> pa.Array:
    """:func:`~shopstream.events.schema.event_key` of whole columns: the key strings are joined by Arrow, only the
    BLAKE2b digest is one call per row, and the hex form is made for the whole column at once."""
    if len(us) == 0:
        return pa.array([], pa.string())
    raw = pc.binary_join_element_wise(
        *(pc.cast(a, pa.string()) for a in (us, etypes, pids, uids)), sessions, "|"
    ).cast(pa.binary())
    b2 = hashlib.blake2b
    hexed = b"".join([b2(x, digest_size=16).digest() for x in raw.to_pylist()]).hex().encode()
    offsets = np.arange(0, 32 * (len(raw) + 1), 32, dtype=np.int32)
    return pa.StringArray.from_buffers(len(raw), pa.py_buffer(offsets), pa.py_buffer(hexed))


def validate_columns(
    values: Sequence[bytes | None],
    topics: str | Sequence[str],
    partitions: int | Sequence[int],
    offsets: Sequence[int],
    max_bytes: int = MAX_EVENT_BYTES,
) -> ValidationResult:
    """Validate one batch given as columns: the values and their Kafka coordinates (a topic and partition
    for the whole batch, or one per message). The same result as
    :func:`~shopstream.events.validation.validate_message` applied to each message, in input order."""
    n = len(values)
    idx, events = _parse(values)
    cols = [list(map(get, events)) for get in _GETTERS]
    t_raw, etype, pid, cid, code, brand, price, uid, sess = (
        pa.array(c, t) for c, t in zip(
            cols,
            (pa.string(), pa.string(), pa.int64(), pa.int64(), pa.string(), pa.string(), pa.float64(), pa.int64(),
             pa.string()),
            strict=True,
        )
    )
    us, t_ok = parse_event_times(t_raw) if events else (np.zeros(0, np.int64), np.zeros(0, bool))
    sizes = np.fromiter(map(len, (values[i] for i in idx)), np.int64, len(idx))
    ok = (
        t_ok
        & (sizes <= max_bytes)
        & pc.greater(pc.utf8_length(sess), 0).to_numpy(zero_copy_only=False)
        & pc.and_(pc.greater_equal(price, 0.0), pc.less(price, PRICE_LIMIT)).fill_null(False)
        .to_numpy(zero_copy_only=False)
        & ~(_nul(t_raw) | _nul(sess) | _nul(code) | _nul(brand))
    )
    fast = np.asarray(idx, np.int64)[ok]
    mask = pa.array(ok)
    us_arr = pa.array(us[ok], pa.int64())
    etype, pid, cid, code, brand, price, uid, sess = (
        a.filter(mask) for a in (etype, pid, cid, code, brand, price, uid, sess)
    )
    table = pa.Table.from_arrays(
        [us_arr.cast(EVENT_TIME_TYPE), etype, pid, cid, _empty_to_null(code), _empty_to_null(brand), price, uid, sess,
         event_keys(us_arr, etype, pid, uid, sess)],
        schema=pa.schema(list(LANDED_SCHEMA)[:10]),
    )

    # The rest one by one with the reference: rejections (with its reasons) and valid events in other forms.
    rest_mask = np.ones(n, bool)
    rest_mask[fast] = False
    rest = np.flatnonzero(rest_mask)
    topic_of = (lambda i: topics) if isinstance(topics, str) else topics.__getitem__
    part_of = (lambda i: partitions) if isinstance(partitions, int) else partitions.__getitem__
    rows: list[dict] = []
    row_idx: list[int] = []
    rejected: list[Rejection] = []
    for i in rest.tolist():
        v = values[i]
        checked = validate_message(v, max_bytes)
        if checked.row is None:
            payload = v if type(v) is bytes or v is None else bytes(v)
            rejected.append(Rejection(checked.reason, checked.detail, payload, topic_of(i), part_of(i), offsets[i]))
        else:
            rows.append(checked.row)
            row_idx.append(i)
    order = fast
    if rows:
        slow = pa.Table.from_pylist(rows, schema=pa.schema(
            [pa.field("event_time", pa.int64()), *list(LANDED_SCHEMA)[1:10]]))
        slow = slow.set_column(0, LANDED_SCHEMA.field("event_time"), slow.column(0).cast(EVENT_TIME_TYPE))
        table = pa.concat_tables([table, slow])
        order = np.concatenate([fast, np.asarray(row_idx, np.int64)])
        perm = np.argsort(order, kind="stable")
        table, order = table.take(pa.array(perm)), order[perm]
    take = pa.array(order, pa.int64())
    topic_col = (pa.array(np.full(len(order), topics, dtype=object), pa.string()) if isinstance(topics, str)
                 else pa.array(topics, pa.string()).take(take))
    part_col = (pa.array(np.full(len(order), partitions, np.int32)) if isinstance(partitions, int)
                else pa.array(partitions, pa.int32()).take(take))
    table = pa.Table.from_arrays(
        [*table.columns, topic_col, part_col, pa.array(offsets, pa.int64()).take(take)], schema=LANDED_SCHEMA
    )
    return ValidationResult(table, rejected)
