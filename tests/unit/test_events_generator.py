"""The generator: determinism, exact truth (recomputed independently), fault rates and realism."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pytest

from shopstream.events.generator import GENERATED_REASONS, GeneratorConfig, Truth, generate, generate_all
from shopstream.events.validation import REASON_CODES, validate_batch

N = 40_000


@pytest.fixture(scope="module")
def produced() -> tuple[list[tuple[bytes, bytes]], Truth, pa.Table, list]:
    messages, truth = generate_all(N, seed=11)
    valid, rejected = validate_batch([(v, "events", 0, i) for i, (_, v) in enumerate(messages)])
    return messages, truth, valid, rejected


def _columns(valid: pa.Table) -> dict[str, list[Any]]:
    cols = {name: valid[name].to_pylist() for name in valid.column_names if name != "event_time"}
    cols["t_us"] = valid["event_time"].cast(pa.int64()).to_pylist()
    return cols


def recompute_truth(messages: list, valid: pa.Table, rejected: list, partitions: int = 4) -> dict[str, Any]:
    """The truth from the messages alone: validate, dedup by event_key, walk in production order; lateness
    per partition, the partition from kafka-python's own murmur2 (an implementation independent of ours)."""
    from kafka.partitioner.default import murmur2

    c = _columns(valid)
    seen: set[str] = set()
    partition_max: dict[int, int] = {}
    by_type: Counter = Counter()
    by_day: Counter = Counter()
    purchases: Counter = Counter()
    cents: Counter = Counter()
    hist: Counter = Counter()
    carts, last_purchase = [], {}
    users, sessions, products, times = set(), set(), set(), []
    late = 0
    for i in range(valid.num_rows):
        t, key = c["t_us"][i], c["event_key"][i]
        if key not in seen:
            seen.add(key)
            etype, sess, pid = c["event_type"][i], c["user_session"][i], c["product_id"][i]
            day = datetime.fromtimestamp(t / 1e6, UTC).strftime("%Y-%m-%d")
            by_type[etype] += 1
            by_day[day] += 1
            users.add(c["user_id"][i])
            sessions.add(sess)
            products.add(pid)
            times.append(t)
            part = (murmur2(sess.encode()) & 0x7FFFFFFF) % partitions
            behind = partition_max.get(part, t) - t
            if behind > 3600 * 10**6:
                late += 1
                hist[(behind - 1) // (3600 * 10**6)] += 1
            if etype == "purchase":
                purchases[day] += 1
                cents[day] += round(c["price"][i] * 100)
                last_purchase[(sess, pid)] = max(t, last_purchase.get((sess, pid), t))
            elif etype == "cart":
                carts.append((sess, pid, t))
        part = (murmur2(c["user_session"][i].encode()) & 0x7FFFFFFF) % partitions
        partition_max[part] = max(partition_max.get(part, t), t)

    def money(x: int) -> str:
        return f"{x // 100}.{x % 100:02d}"

    return {
        "total_messages": len(messages),
        "valid_messages": valid.num_rows,
        "unique_events": len(seen),
        "duplicates": valid.num_rows - len(seen),
        "invalid": len(rejected),
        "invalid_by_reason": {r: Counter(x.reason_code for x in rejected)[r] for r in REASON_CODES},
        "unique_events_by_type": {t: by_type[t] for t in ("view", "cart", "remove_from_cart", "purchase")},
        "unique_events_by_day": dict(sorted(by_day.items())),
        "late_events": late,
        "late_histogram": {str(k): v for k, v in sorted(hist.items())},
        "purchases": sum(purchases.values()),
        "revenue": money(sum(cents.values())),
        "purchases_by_day": dict(sorted(purchases.items())),
        "revenue_by_day": {d: money(v) for d, v in sorted(cents.items())},
        "cart_adds": len(carts),
        "cart_adds_converted": sum(1 for s, p, t in carts if last_purchase.get((s, p), -1) >= t),
        "unique_users": len(users),
        "unique_sessions": len(sessions),
        "unique_products": len(products),
        "first_event_time": datetime.fromtimestamp(min(times) / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "last_event_time": datetime.fromtimestamp(max(times) / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def test_truth_is_exact(produced) -> None:
    messages, truth, valid, rejected = produced
    expected = recompute_truth(messages, valid, rejected)
    got = truth.to_dict()
    assert got["seed"] == 11
    assert {k: got[k] for k in expected} == expected


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    a = list(generate(3000, seed=5))
    assert a == list(generate(3000, seed=5))
    assert a != list(generate(3000, seed=6))
    stream = generate(2000, seed=5)
    first = list(stream)
    assert list(stream) == first  # a stream re-iterates identically and restarts its truth
    assert stream.truth.total_messages == 2000


def test_fault_counts_follow_the_rates(produced) -> None:
    _, truth, _, _ = produced
    assert truth.total_messages == N
    assert truth.invalid == round(N * 0.10) and truth.duplicates == round(N * 0.02)
    # originals are held back 1-6 h of stream time; a few held back just over 1 h are not quite 1 h behind
    # their own partition (whose newest event trails the whole stream's by seconds), so the truth counts
    # slightly fewer as late than were injected
    assert 0.95 * round(N * 0.02) <= truth.late_events <= round(N * 0.02)
    assert set(truth.late_histogram) <= set(range(1, 8)) and min(truth.late_histogram) == 1
    generated = {r.value for r in GENERATED_REASONS}
    assert {k for k, v in truth.invalid_by_reason.items() if v} == generated
    share = min(truth.invalid_by_reason[r] for r in generated) / truth.invalid
    assert share > 0.10  # all seven generated reasons, roughly uniform


def test_custom_rates_and_no_faults() -> None:
    messages, truth = generate_all(5000, seed=2, invalid_rate=0.0, duplicate_rate=0.05, late_rate=0.0)
    assert truth.invalid == 0 and truth.duplicates == 250 and truth.late_events == 0
    valid, rejected = validate_batch([(v, "t", 0, i) for i, (_, v) in enumerate(messages)])
    assert rejected == [] and valid.num_rows == 5000
    seen: set[str] = set()
    firsts = []
    for t, k in zip(valid["event_time"].to_pylist(), valid["event_key"].to_pylist(), strict=True):
        if k not in seen:
            seen.add(k)
            firsts.append(t)
    assert len(firsts) == truth.unique_events == 4750
    assert firsts == sorted(firsts)  # without late events the originals come in event-time order


def test_duplicates_are_identical_recent_resends(produced) -> None:
    messages, _, valid, _ = produced
    last_seen: dict[bytes, int] = {}
    lags = []
    for i in valid["src_offset"].to_pylist():
        value = messages[i][1]
        if value in last_seen:
            lags.append(i - last_seen[value])
        last_seen[value] = i
    assert len(lags) == round(N * 0.02)
    assert max(lags) < 200


def test_keys_are_sessions(produced) -> None:
    messages, _, valid, _ = produced
    sessions = set(valid["user_session"].to_pylist())
    for key, value in messages[:2000]:
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("user_session"), str) and obj["user_session"]:
            assert key == obj["user_session"].encode()
    assert all(key.decode() in sessions for key, _ in messages[:2000])


def test_realistic_shape(produced) -> None:
    _, truth, valid, _ = produced
    n = valid.num_rows
    assert 0.10 <= valid["category_code"].null_count / n <= 0.20
    assert 0.08 <= valid["brand"].null_count / n <= 0.16
    codes = {c for c in valid["category_code"].to_pylist() if c}
    assert {
        "electronics.smartphone",
        "appliances.kitchen.refrigerators",
        "apparel.shoes",
        "computers.notebook",
    } <= codes
    by_type = truth.unique_events_by_type
    assert by_type["view"] > 0.75 * truth.unique_events
    assert by_type["cart"] > by_type["purchase"] > 0 and by_type["remove_from_cart"] > 0
    assert 0.25 <= truth.cart_adds_converted / truth.cart_adds <= 0.45
    hours = Counter(t.hour for t in valid["event_time"].to_pylist())
    assert sum(hours[h] for h in range(12, 18)) > 2.5 * sum(hours[h] for h in range(0, 6))
    assert len(truth.unique_events_by_day) in (7, 8)
    assert truth.first_event_time >= "2019-10-01 00:00:00 UTC"
    prices = valid["price"].to_pylist()
    assert min(prices) >= 0 and 20 < sorted(prices)[len(prices) // 2] < 600


def _cart_features(valid: pa.Table) -> list[dict[str, Any]]:
    """Unique cart-adds with their label and the features the generator's model uses."""
    c = _columns(valid)
    seen, rows = set(), []
    for i in range(valid.num_rows):
        if c["event_key"][i] not in seen:
            seen.add(c["event_key"][i])
            rows.append(i)
    rows.sort(key=lambda i: c["t_us"][i])
    last_purchase: dict[tuple, int] = {}
    user_purchases: dict[int, list[int]] = defaultdict(list)
    session_start: dict[str, int] = {}
    for i in rows:
        session_start.setdefault(c["user_session"][i], c["t_us"][i])
        if c["event_type"][i] == "purchase":
            key = (c["user_session"][i], c["product_id"][i])
            last_purchase[key] = max(c["t_us"][i], last_purchase.get(key, 0))
            user_purchases[c["user_id"][i]].append(c["t_us"][i])
    out = []
    for i in rows:
        if c["event_type"][i] != "cart":
            continue
        t, sess = c["t_us"][i], c["user_session"][i]
        out.append(
            {
                "converted": last_purchase.get((sess, c["product_id"][i]), -1) >= t,
                "price": c["price"][i],
                "hour": datetime.fromtimestamp(t / 1e6, UTC).hour,
                "returning": any(p < session_start[sess] for p in user_purchases[c["user_id"][i]]),
                "category": c["category_code"][i],
            }
        )
    return out


def _rate(rows: list[dict]) -> float:
    return sum(r["converted"] for r in rows) / len(rows)


def test_conversion_depends_on_features(produced) -> None:
    carts = _cart_features(produced[2])
    assert len(carts) > 2000
    by_price = sorted(carts, key=lambda r: r["price"])
    third = len(by_price) // 3
    cheap, dear = _rate(by_price[:third]), _rate(by_price[-third:])
    assert cheap - dear > 0.12, (cheap, dear)
    returning = [r for r in carts if r["returning"]]
    first_time = [r for r in carts if not r["returning"]]
    assert len(returning) > 100 and _rate(returning) - _rate(first_time) > 0.08
    evening = [r for r in carts if 15 <= r["hour"] < 20]
    night = [r for r in carts if r["hour"] >= 22 or r["hour"] < 5]
    assert _rate(evening) - _rate(night) > 0.05
    phones = [r for r in carts if r["category"] == "electronics.smartphone"]
    fridges = [
        r for r in carts if r["category"] in ("appliances.kitchen.refrigerators", "computers.notebook")
    ]
    assert _rate(phones) > _rate(fridges)


def test_truth_serialisation_round_trip(produced) -> None:
    truth = produced[1]
    data = orjson.loads(truth.to_json())
    assert Truth.from_dict(data) == truth
    assert all(isinstance(k, str) for k in data["late_histogram"])
    assert float(data["revenue"]) == pytest.approx(sum(float(v) for v in data["revenue_by_day"].values()))
    assert math.isclose(sum(data["unique_events_by_type"].values()), data["unique_events"])


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="invalid_rate"):
        GeneratorConfig(invalid_rate=1.5)
    with pytest.raises(ValueError, match="late_hours"):
        GeneratorConfig(late_hours=(0.5, 2))
    with pytest.raises(ValueError, match="timezone-aware"):
        GeneratorConfig(start=datetime(2019, 10, 1))
    cfg = GeneratorConfig(n_events=10, seed=3, days=1)
    assert generate(config=cfg, invalid_rate=0.2).config.invalid_rate == 0.2
    messages, truth = generate_all(config=cfg)
    assert len(messages) == truth.total_messages == 10


def test_truth_is_exact_for_a_short_dense_span() -> None:
    messages, truth = generate_all(
        6000, seed=8, days=0.4, late_rate=0.1, duplicate_rate=0.05, late_hours=(1, 3)
    )
    valid, rejected = validate_batch([(v, "events", 0, i) for i, (_, v) in enumerate(messages)])
    expected = recompute_truth(messages, valid, rejected)
    assert {k: truth.to_dict()[k] for k in expected} == expected
    assert 0 < truth.late_events <= 600 and max(truth.late_histogram) <= 3


def test_a_repeated_demo_continues_after_the_data_with_its_own_seed():
    from datetime import UTC, datetime

    from shopstream.cli import next_window
    from shopstream.events.generator import GeneratorConfig

    base = GeneratorConfig().start
    assert next_window(None, 42, base) == (None, 42)
    start, seed = next_window(datetime(2019, 10, 7, 23, 59, 12, tzinfo=UTC), 42, base)
    assert start == datetime(2019, 10, 8, 0, 0, tzinfo=UTC) and seed == 42 + 7 * 24
    again, seed2 = next_window(datetime(2019, 10, 14, 23, 1, tzinfo=UTC), 42, base)
    assert again > start and seed2 != seed
