"""Kaggle-format replay: CSV, CSV.gz and Parquet round trips, conversions and bad cells."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopstream.events.generator import generate_all
from shopstream.events.kaggle import (
    iter_kaggle_batches,
    read_kaggle,
    write_kaggle_csv,
    write_kaggle_parquet,
)
from shopstream.events.schema import EVENT_FIELDS
from shopstream.events.validation import validate_batch

HEADER = ",".join(EVENT_FIELDS)


@pytest.fixture(scope="module")
def clean() -> list[tuple[bytes, bytes]]:
    messages, _ = generate_all(3000, seed=9, invalid_rate=0.0, duplicate_rate=0.0, late_rate=0.0)
    return messages


@pytest.mark.parametrize("name", ["events.csv", "events.csv.gz", "events.parquet"])
def test_round_trip_is_byte_identical(clean, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    writer = write_kaggle_parquet if name.endswith(".parquet") else write_kaggle_csv
    assert writer(clean, path) == len(clean)
    batches = list(iter_kaggle_batches(path, batch_rows=1000))
    assert len(batches) >= 2
    assert [m for b in batches for m in b] == clean


def test_csv_gz_is_gzip_and_deterministic(clean, tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv.gz", tmp_path / "b.csv.gz"
    write_kaggle_csv(clean[:50], a)
    write_kaggle_csv(clean[:50], b)
    assert a.read_bytes() == b.read_bytes()
    assert gzip.decompress(a.read_bytes()).decode().splitlines()[0] == HEADER


def test_kaggle_text_is_converted_and_bad_cells_reach_validation(tmp_path: Path) -> None:
    session = "8187d148-3c41-46d4-b0c0-9c08cd9dc564"
    lines = [
        HEADER,
        f"2019-10-01 00:00:04 UTC,view,1004856,2053013555631882655,,,130.76,543272936,{session}",
        "2019-10-01 00:00:05 UTC,cart,1004856,2053013555631882655,electronics.smartphone,"
        f'"samsung",130,543272936,{session}',
        f"2019-10-01 00:00:06 UTC,view,x,2053013555631882655,,,1.0,543272936,{session}",
        f"2019-10-01 00:00:07 UTC,view,1,2053013555631882655,,,abc,543272936,{session}",
        f"2019-10-01 00:00:08 UTC,view,1,2053013555631882655,,,nan,543272936,{session}",
        f"2019-10-01 00:00:09 UTC,view,1,2053013555631882655,,,,543272936,{session}",
        "2019-10-01 00:00:10 UTC,view,1,2053013555631882655,,,1.0,543272936,",
        f"2019-10-01 00:00:11,view,1,2053013555631882655,,,1.0,543272936,{session}",
    ]
    path = tmp_path / "k.csv"
    path.write_text("\n".join(lines) + "\n")
    messages = list(read_kaggle(path))
    first = orjson.loads(messages[0][1])
    assert messages[0][0] == session.encode()
    assert first == {
        "event_time": "2019-10-01 00:00:04 UTC",
        "event_type": "view",
        "product_id": 1004856,
        "category_id": 2053013555631882655,
        "category_code": None,
        "brand": None,
        "price": 130.76,
        "user_id": 543272936,
        "user_session": session,
    }
    assert orjson.loads(messages[1][1])["price"] == 130.0
    assert orjson.loads(messages[2][1])["product_id"] == "x"
    assert messages[6][0] == b""
    valid, rejected = validate_batch([(v, "replay", 0, i) for i, (_, v) in enumerate(messages)])
    assert valid["src_offset"].to_pylist() == [0, 1]
    assert [(r.offset, r.reason_code) for r in rejected] == [
        (2, "wrong_type"),
        (3, "wrong_type"),
        (4, "wrong_type"),
        (5, "missing_field"),
        (6, "missing_field"),
        (7, "bad_timestamp"),
    ]


def test_parquet_variants_string_columns_and_other_timezones(tmp_path: Path) -> None:
    session = "s-1"
    typed = pa.table(
        {
            "event_time": pa.array([1569888004_123456, None], pa.timestamp("us", tz="Europe/Moscow")),
            "event_type": ["purchase", "view"],
            "product_id": pa.array(["5", "6"]),
            "category_id": pa.array([7.0, 8.0]),
            "category_code": ["", None],
            "brand": ["acme", ""],
            "price": pa.array([10.5, None]),
            "user_id": pa.array([9, 10], pa.int32()),
            "user_session": [session, session],
            "extra": [1, 2],
        }
    )
    path = tmp_path / "typed.pq"
    pq.write_table(typed, path)
    values = [orjson.loads(v) for _, v in read_kaggle(path)]
    assert values[0] == {
        "event_time": "2019-10-01 00:00:04 UTC",
        "event_type": "purchase",
        "product_id": 5,
        "category_id": 7,
        "category_code": None,
        "brand": "acme",
        "price": 10.5,
        "user_id": 9,
        "user_session": session,
    }
    assert values[1]["event_time"] is None and values[1]["price"] is None and values[1]["brand"] is None


def test_limit_missing_columns_and_skipped_items(clean, tmp_path: Path) -> None:
    path = tmp_path / "k.csv"
    assert (
        write_kaggle_csv(
            [*clean[:10], (b"k", b"[1, 2]"), (b"k", b"{bad"), dict(orjson.loads(clean[0][1]))], path
        )
        == 11
    )
    assert len(list(read_kaggle(path, limit=4))) == 4
    assert len(list(read_kaggle(path, batch_rows=3, limit=100))) == 11
    bad = tmp_path / "bad.csv"
    bad.write_text("event_time,event_type,product_id\n2019-10-01 00:00:04 UTC,view,1\n")
    with pytest.raises(ValueError, match="missing columns category_id"):
        list(read_kaggle(bad))


def test_write_parquet_drops_invalid_and_is_typed(tmp_path: Path) -> None:
    messages, truth = generate_all(1000, seed=4)
    path = tmp_path / "k.parquet"
    written = write_kaggle_parquet(messages, path)
    assert written == truth.valid_messages
    schema = pq.read_schema(path)
    assert schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert Counter(orjson.loads(v)["event_type"] for _, v in read_kaggle(path)).total() == written
