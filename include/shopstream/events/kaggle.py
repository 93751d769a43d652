"""Replay of Kaggle-format files as event messages, and small Kaggle-format writers for tests.

A Kaggle file is CSV (optionally ``.gz``) or Parquet with the columns ``event_time, event_type,
product_id, category_id, category_code, brand, price, user_id, user_session``; empty CSV fields are
null. Files are read in chunks and turned into ``(key, value)`` messages in the generator's JSON form
(key = ``user_session``; value fields in column order, timestamps as ``"YYYY-MM-DD HH:MM:SS UTC"``), so
replayed data goes through the same validation. Text is converted to the contract's JSON types first
(ids to integers, price to a number); a value that does not convert is passed on as its text, so
validation rejects it as ``wrong_type`` rather than the reader failing the file.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shopstream.events.schema import EVENT_FIELDS, parse_event_time
from shopstream.events.validation import validate_batch

Format = Literal["csv", "parquet"]
Message = tuple[bytes, bytes]

_INT_RE = re.compile(r"-?\d+")
_ID_FIELDS = ("product_id", "category_id", "user_id")


def detect_format(path: str | Path) -> Format:
    """``parquet`` for ``.parquet``/``.pq`` files, otherwise ``csv`` (``.csv``, ``.csv.gz``, ...)."""
    return "parquet" if Path(path).suffix.lower() in (".parquet", ".pq") else "csv"


def _ints(col: pa.Array) -> list[Any]:
    if pa.types.is_integer(col.type):
        return col.to_pylist()
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            return pc.cast(col, pa.int64()).to_pylist()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return [int(v) if v is not None and _INT_RE.fullmatch(v) else v for v in col.to_pylist()]
    if pa.types.is_floating(col.type):  # e.g. a pandas export with NaN for missing ids
        return [
            int(v) if v is not None and v.is_integer() else (None if v is None or math.isnan(v) else v)
            for v in col.to_pylist()
        ]
    return col.to_pylist()


def _float_or_text(v: str | None) -> Any:
    if v is None:
        return None
    try:
        f = float(v)
    except ValueError:
        return v
    return f if math.isfinite(f) else v


def _prices(col: pa.Array) -> list[Any]:
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_decimal(col.type):
        return [None if v is None or v != v else float(v) for v in col.to_pylist()]
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            floats = pc.cast(col, pa.float64())
            if pc.all(pc.is_finite(floats)).as_py() is not False:
                return floats.to_pylist()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        return [_float_or_text(v) for v in col.to_pylist()]
    return col.to_pylist()


def _times(col: pa.Array) -> list[Any]:
    if pa.types.is_timestamp(col.type):  # tz-aware values are UTC instants; naive ones are taken as UTC
        secs = pc.cast(col.cast(pa.timestamp(col.type.unit)), pa.timestamp("s"), safe=False).fill_null(0)
        text = np.datetime_as_string(
            secs.cast(pa.int64()).to_numpy(zero_copy_only=False).astype("datetime64[s]")
        ).tolist()
        valid = col.is_valid().to_pylist()
        return [f"{t[:10]} {t[11:]} UTC" if ok else None for t, ok in zip(text, valid, strict=True)]
    return col.to_pylist()


def _texts(col: pa.Array) -> list[Any]:
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return [v or None for v in col.to_pylist()]
    return col.to_pylist()


def _batch_messages(batch: pa.RecordBatch) -> list[Message]:
    cols = {name: batch.column(name) for name in EVENT_FIELDS}
    for name, col in cols.items():
        if isinstance(col, pa.ChunkedArray):
            cols[name] = col.combine_chunks()
    rows = zip(
        _times(cols["event_time"]),
        _texts(cols["event_type"]),
        _ints(cols["product_id"]),
        _ints(cols["category_id"]),
        _texts(cols["category_code"]),
        _texts(cols["brand"]),
        _prices(cols["price"]),
        _ints(cols["user_id"]),
        _texts(cols["user_session"]),
        strict=True,
    )
    dumps = orjson.dumps
    out: list[Message] = []
    for et, typ, pid, cid, code, brand, price, uid, sess in rows:
        value = dumps(
            {
                "event_time": et,
                "event_type": typ,
                "product_id": pid,
                "category_id": cid,
                "category_code": code,
                "brand": brand,
                "price": price,
                "user_id": uid,
                "user_session": sess,
            }
        )
        out.append((sess.encode() if isinstance(sess, str) else b"", value))
    return out


def _check_columns(names: Iterable[str], path: str | Path) -> None:
    missing = [c for c in EVENT_FIELDS if c not in set(names)]
    if missing:
        raise ValueError(f"{path}: not a Kaggle events file, missing columns {', '.join(missing)}")


def iter_kaggle_batches(
    path: str | Path, *, batch_rows: int = 65_536, fmt: Format | None = None
) -> Iterator[list[Message]]:
    """Read a Kaggle CSV/CSV.gz/Parquet file in chunks; yield each chunk as ``(key, value)`` messages."""
    fmt = fmt or detect_format(path)
    if fmt == "parquet":
        pf = pq.ParquetFile(path)
        _check_columns(pf.schema_arrow.names, path)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=list(EVENT_FIELDS)):
            yield _batch_messages(batch)
        return
    with pa.input_stream(str(path)) as raw:  # decompresses .gz (by extension)
        head = raw.read(1 << 16).split(b"\n", 1)[0].decode("utf-8-sig").strip()
    _check_columns([c.strip().strip('"') for c in head.split(",")], path)
    reader = pacsv.open_csv(
        pa.input_stream(str(path)),
        read_options=pacsv.ReadOptions(block_size=max(1 << 16, batch_rows * 110)),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(EVENT_FIELDS, pa.string()),
            include_columns=list(EVENT_FIELDS),
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
            null_values=[""],
        ),
    )
    for batch in reader:
        if batch.num_rows:
            yield _batch_messages(batch)


def read_kaggle(
    path: str | Path, *, batch_rows: int = 65_536, limit: int | None = None, fmt: Format | None = None
) -> Iterator[Message]:
    """Messages of a Kaggle file in file order, at most ``limit`` of them."""
    left = limit
    for batch in iter_kaggle_batches(path, batch_rows=batch_rows, fmt=fmt):
        if left is not None:
            batch = batch[:left]
            left -= len(batch)
        yield from batch
        if left is not None and left <= 0:
            return


def _as_row(item: Any) -> dict[str, Any] | None:
    if isinstance(item, dict):
        row = item
    else:
        value = item[1] if isinstance(item, tuple) else item
        try:
            row = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
        if isinstance(row, dict) and "payload" in row and "schema" in row:
            row = row["payload"]
    return row if isinstance(row, dict) else None


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else repr(v) if isinstance(v, float) else str(v)


def write_kaggle_csv(messages_or_rows: Iterable[Any], path: str | Path) -> int:
    """Write a Kaggle-format CSV (gzip when ``path`` ends in ``.gz``); return the rows written.

    Items are dict rows, ``(key, value)`` messages or value bytes; values that are not JSON objects
    cannot be expressed as a CSV row and are skipped. None becomes an empty field.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EVENT_FIELDS)
    n = 0
    for item in messages_or_rows:
        row = _as_row(item)
        if row is not None:
            writer.writerow([_cell(row.get(f)) for f in EVENT_FIELDS])
            n += 1
    data = buf.getvalue().encode()
    if str(path).endswith(".gz"):
        with open(path, "wb") as fh, gzip.GzipFile(filename="", fileobj=fh, mode="wb", mtime=0) as gz:
            gz.write(data)
    else:
        Path(path).write_bytes(data)
    return n


def write_kaggle_parquet(messages_or_rows: Iterable[Any], path: str | Path) -> int:
    """Write the valid items as a typed Kaggle Parquet file (event_time ``timestamp[us, UTC]``).

    Items are as for :func:`write_kaggle_csv`; invalid ones are dropped. Returns the rows written.
    """
    values = []
    for item in messages_or_rows:
        row = _as_row(item)
        if row is not None:
            values.append((orjson.dumps(row), "", 0, len(values)))
    table = validate_batch(values).valid.select(list(EVENT_FIELDS))
    pq.write_table(table, path)
    return table.num_rows


def iter_timed(path: str | Path, *, batch_rows: int = 65_536) -> Iterator[tuple[bytes, bytes, int | None]]:
    """Replay messages with an arrival time (epoch ms): the largest event time read so far.

    A historical file carries no arrival times; taking the running maximum of event times replays it as a
    stream in which out-of-order rows are late by exactly how far they trail, as a live stream would see.
    Rows whose time does not parse get the current watermark (validation rejects them anyway).
    """
    watermark: int | None = None
    for batch in iter_kaggle_batches(path, batch_rows=batch_rows):
        for key, value in batch:
            try:
                raw = orjson.loads(value).get("event_time")
            except (orjson.JSONDecodeError, AttributeError):
                raw = None
            us = parse_event_time(raw) if isinstance(raw, str) else None
            if us is not None and (watermark is None or us // 1000 > watermark):
                watermark = us // 1000
            yield key, value, watermark
