"""The shared feature definition: point-in-time features and labels of cart-adds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shopstream.features import (
    FEATURE_COLUMNS,
    SessionState,
    UserState,
    category_levels,
    features_for,
    update,
    user_feature_rows,
)

T0 = datetime(2019, 10, 7, 18, 0, tzinfo=UTC)  # a Monday


def ev(i: int, etype: str, product: int, session: str = "s1", user: int = 1, price: float = 10.0,
       code: str | None = "electronics.audio.headphone", brand: str | None = "sony") -> dict:
    return {"event_key": f"k{i:03d}", "event_time": T0 + timedelta(seconds=10 * i), "event_type": etype,
            "product_id": product, "category_code": code, "brand": brand, "price": price, "user_id": user,
            "user_session": session}


def test_category_levels():
    assert category_levels("electronics.audio.headphone") == ("electronics", "audio", "headphone")
    assert category_levels("apparel.shoes") == ("apparel", "shoes", None)
    assert category_levels("a.b.c.d") == ("a", "b", "c.d")
    assert category_levels("") == (None, None, None)
    assert category_levels(None) == (None, None, None)


def test_features_see_only_the_past_and_label_looks_ahead():
    events = [
        ev(0, "view", 1, session="old"), ev(1, "cart", 1, session="old"), ev(2, "purchase", 1, session="old"),
        ev(10, "view", 2), ev(11, "view", 2), ev(12, "view", 3), ev(13, "cart", 2), ev(14, "purchase", 2),
        ev(15, "cart", 3),
    ]
    rows = list(user_feature_rows(events[::-1]))  # input order does not matter
    assert [r["event_key"] for r in rows] == ["k001", "k013", "k015"]
    first, second, third = rows
    assert first["user_prior_sessions"] == 0 and first["label"] is True
    assert second == {**second, "session_events_before": 3, "session_views_before": 3, "session_carts_before": 0,
                      "session_distinct_products": 2, "product_views_in_session": 2, "user_prior_sessions": 1,
                      "user_prior_carts": 1, "user_prior_purchases": 1, "session_duration_s": 30.0,
                      "hour": 18, "weekday": 1, "category_l1": "electronics", "category_l2": "audio",
                      "brand": "sony", "label": True}
    assert third["session_carts_before"] == 1 and third["label"] is False
    assert set(FEATURE_COLUMNS) <= set(first)


def test_incremental_state_gives_the_same_features_as_the_replay():
    """The online path applies `update` event by event; it must agree with the batch replay."""
    events = [ev(0, "view", 5), ev(1, "view", 6, brand=None, code=None), ev(2, "cart", 6, brand=None, code=None),
              ev(3, "remove_from_cart", 6), ev(4, "cart", 5)]
    batch = {r["event_key"]: r for r in user_feature_rows(events)}
    user, session = UserState(), SessionState()
    for e in events:
        if e["event_type"] == "cart":
            online = features_for(user, session, e["user_session"], e["product_id"], e["price"], e["event_time"],
                                  e["category_code"], e["brand"])
            assert {k: batch[e["event_key"]][k] for k in FEATURE_COLUMNS} == online
        update(user, session, e["user_session"], e["event_type"], e["product_id"], e["event_time"].timestamp())
    assert batch["k002"]["brand"] is None and batch["k002"]["category_l1"] is None
