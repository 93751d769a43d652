"""The online feature store on a real redis-server: state round trips, dedupe, order, records, TTLs.

The reference is :func:`shopstream.features.user_feature_rows` (what the gold job computes) on the same events.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopstream.events.generator import generate
from shopstream.events.validation import validate_batch
from shopstream.features import FEATURE_COLUMNS, SessionState, UserState, user_feature_rows
from shopstream.serving.feature_store import (
    Event,
    Keys,
    Ttls,
    apply_events,
    connect,
    events_from_table,
    features_for_event,
    lookup,
    lookup_many,
    session_fields,
    session_state,
    silver_price,
    user_fields,
    user_state,
)
from shopstream.settings import Settings, load_settings
from shopstream.stack.base import free_port
from shopstream.stack.redis_server import RedisService, redis_server_bin


@pytest.fixture(scope="module")
def redis_settings() -> Iterator[Settings]:
    try:
        redis_server_bin()
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"redis-server is needed: {e}")
    state = Path(tempfile.mkdtemp(prefix="shopstream-redis-"))
    s = load_settings(state_dir=state, redis={"port": free_port()})
    svc = RedisService(s)
    svc.start()
    try:
        yield s
    finally:
        svc.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture()
def r(redis_settings):
    client = connect(redis_settings)
    client.flushdb()
    yield client
    client.close()


def stream_events(n: int = 4000, seed: int = 3, duplicate_rate: float = 0.03) -> list[Event]:
    msgs = [(v, "t", 0, i) for i, (_k, v) in enumerate(generate(n, seed=seed, days=1, invalid_rate=0.0,
                                                                   late_rate=0.0, duplicate_rate=duplicate_rate))]
    return events_from_table(validate_batch(msgs).valid)


def gold(events: list[Event]) -> dict[str, dict]:
    """Feature rows by cart-add key, as the gold job computes them (deduplicated, per user)."""
    first: dict[str, Event] = {}
    for e in events:
        first.setdefault(e.event_key, e)
    by_user: dict[int, list[dict]] = defaultdict(list)
    for e in first.values():
        by_user[e.user_id].append({
            "event_key": e.event_key, "event_time": e.event_time, "event_type": e.event_type,
            "product_id": e.product_id, "category_code": e.category_code, "brand": e.brand,
            "price": silver_price(e.price), "user_id": e.user_id, "user_session": e.user_session})
    return {row["event_key"]: {c: row[c] for c in FEATURE_COLUMNS}
            for evs in by_user.values() for row in user_feature_rows(evs)}


# ---------------------------------------------------------------------- state codec
@settings(max_examples=200, deadline=None)
@given(st.builds(
    SessionState,
    start_s=st.none() | st.floats(min_value=0, max_value=2e9, allow_nan=False),
    events=st.integers(0, 10**6), views=st.integers(0, 10**6), carts=st.integers(0, 99), purchases=st.integers(0, 99),
    products=st.sets(st.integers(1, 2**62), max_size=8),
    product_views=st.dictionaries(st.integers(1, 2**62), st.integers(1, 99), max_size=8),
))
def test_session_state_round_trips_through_its_hash_and_set(s):
    assert session_state(session_fields(s), [str(p) for p in s.products]) == s


@given(st.builds(UserState, sessions=st.sets(st.text(min_size=1, max_size=12), max_size=5),
                 carts=st.integers(0, 10**6), purchases=st.integers(0, 10**6)))
def test_user_state_round_trips(u):
    assert user_state(user_fields(u), list(u.sessions)) == u


def test_empty_state_is_a_fresh_session_and_a_new_user():
    assert session_state({}, []) == SessionState()
    assert user_state({}, []) == UserState()


# ---------------------------------------------------------------------- against the batch definition
def test_applied_events_give_the_gold_features_of_every_cart_add(r):
    events = stream_events()
    expected = gold(events)
    for i in range(0, len(events), 700):           # batches, as the consumer applies them
        apply_events(r, events[i:i + 700])
    carts = {e.event_key: e for e in events if e.event_type == "cart"}
    assert len(carts) == len(expected) > 50
    for key, e in carts.items():
        got = lookup(r, e)
        assert got.source == "feature_log"
        assert got.features == expected[key], key


def test_a_cart_add_not_yet_applied_is_answered_from_the_live_state(r):
    events = stream_events(seed=4, duplicate_rate=0.0)
    expected = gold(events)
    carts = [e for e in events if e.event_type == "cart"][5:25]
    for cart in carts:
        keys = Keys(f"live:{cart.event_key}:")
        before = [e for e in events if e.user_id == cart.user_id and (e.t_us, e.event_key) < (cart.t_us, cart.event_key)]
        apply_events(r, before, keys)
        got = lookup(r, cart, keys)
        assert got.source == "live_state" and got.features == expected[cart.event_key]
        assert got.session_found == any(e.user_session == cart.user_session for e in before)


def test_re_sends_are_applied_once(r):
    events = stream_events(1500, seed=5, duplicate_rate=0.0)
    first = apply_events(r, events)
    snapshot = {k: r.hgetall(k) for k in r.scan_iter("ss:s:*")}
    again = apply_events(r, events[::-1] + events[:100])
    assert first.applied == len({e.event_key for e in events}) and first.duplicates == 0
    assert again.applied == 0 and again.duplicates == len(events) + 100
    assert {k: r.hgetall(k) for k in r.scan_iter("ss:s:*")} == snapshot


def test_events_of_one_batch_are_applied_in_event_time_then_key_order(r):
    events = stream_events(800, seed=6, duplicate_rate=0.0)
    expected = gold(events)
    apply_events(r, events[::-1])                  # arrival order does not matter within a batch
    for e in events:
        if e.event_type == "cart":
            assert features_for_event(r, e) == expected[e.event_key]


def test_several_cart_adds_of_a_session_in_one_request_count_the_earlier_ones(r):
    t = 1_570_000_000_000_000
    view = Event("k-view", t, "view", 11, 7, "s1", 5.0)
    cart_a = Event("k-a", t + 10_000_000, "cart", 11, 7, "s1", 5.0)
    cart_b = Event("k-b", t + 20_000_000, "cart", 12, 7, "s1", 8.0)
    apply_events(r, [view])
    b, a, a_again = lookup_many(r, [cart_b, cart_a, cart_a])      # answers in request order
    assert a.features["session_carts_before"] == 0 and b.features["session_carts_before"] == 1
    assert a.features == a_again.features
    assert b.features["session_events_before"] == 2 and b.features["session_distinct_products"] == 1
    assert a.features["session_events_before"] == 1


def test_keys_expire_and_offsets_are_recorded_with_the_batch(r):
    ttls = Ttls(session_s=100, user_s=1000, dedupe_s=50, feature_log_s=70)
    events = stream_events(300, seed=8, duplicate_rate=0.0)
    apply_events(r, events, Keys(), ttls, offsets=("ss:offsets:g:t", {0: 300, 1: 12}))
    e = next(e for e in events if e.event_type == "cart")
    k = Keys()
    assert 90 < r.ttl(k.session(e.user_id, e.user_session)) <= 100
    assert 90 < r.ttl(k.session_products(e.user_id, e.user_session)) <= 100
    assert 990 < r.ttl(k.user(e.user_id)) <= 1000 and 990 < r.ttl(k.user_sessions(e.user_id)) <= 1000
    assert 40 < r.ttl(k.seen(e.event_key)) <= 50 and 60 < r.ttl(k.logged(e.event_key)) <= 70
    assert r.hgetall("ss:offsets:g:t") == {"0": "300", "1": "12"}


def test_concurrent_writers_on_the_same_users_lose_nothing(r):
    events = stream_events(3000, seed=9, duplicate_rate=0.0)
    halves = [events[0::2], events[1::2]]
    results = []

    def write(part):
        for i in range(0, len(part), 50):
            results.append(apply_events(r, part[i:i + 50]))

    threads = [threading.Thread(target=write, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(x.applied for x in results) == len({e.event_key for e in events})
    users = {e.user_id for e in events}
    for u in users:
        carts = sum(1 for e in {e.event_key: e for e in events}.values() if e.user_id == u and e.event_type == "cart")
        assert int(r.hget(f"ss:u:{u}", "carts") or 0) == carts


def test_silver_price_rounds_half_up_to_cents():
    assert silver_price(130.76) == 130.76
    assert silver_price(1.005) == 1.01 and silver_price(2.675) == 2.68 and silver_price(7) == 7.0
