"""Purchase-intent features: ONE definition shared by the gold feature table and the online path.

Features of a cart-add are computed from the events of the same user that came before it, in event
order (event_time, then event_key), by a small state machine: :class:`SessionState` per session and
:class:`UserState` per user. The gold job replays each user's silver events through it
(:func:`user_feature_rows`); the online feature store applies the same ``update`` to events as they stream
in and calls :func:`features_for` at prediction time. Same events, same code, same features.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

CATEGORICAL = ("category_l1", "category_l2", "brand")
NUMERIC = (
    "price",
    "hour",
    "weekday",
    "session_events_before",
    "session_views_before",
    "session_carts_before",
    "session_distinct_products",
    "session_duration_s",
    "product_views_in_session",
    "user_prior_sessions",
    "user_prior_carts",
    "user_prior_purchases",
)
FEATURE_COLUMNS: tuple[str, ...] = CATEGORICAL + NUMERIC
ID_COLUMNS = ("event_key", "event_time", "user_id", "user_session", "product_id")
LABEL = "label"


def category_levels(code: str | None) -> tuple[str | None, str | None, str | None]:
    """Levels 1-3 of a dotted category_code (``electronics.audio.headphone``); None where absent."""
    if not code:
        return None, None, None
    parts = code.split(".")
    return (parts[0] or None, parts[1] if len(parts) > 1 else None, ".".join(parts[2:]) if len(parts) > 2 else None)


@dataclass
class SessionState:
    """What is known about one session so far."""

    start_s: float | None = None
    events: int = 0
    views: int = 0
    carts: int = 0
    purchases: int = 0
    products: set[int] = field(default_factory=set)
    product_views: dict[int, int] = field(default_factory=dict)


@dataclass
class UserState:
    """What is known about one user so far (all sessions)."""

    sessions: set[str] = field(default_factory=set)
    carts: int = 0
    purchases: int = 0


def update(user: UserState, session: SessionState, user_session: str, event_type: str, product_id: int,
           event_time_s: float) -> None:
    """Apply one event to the user's and its session's state."""
    user.sessions.add(user_session)
    if session.start_s is None:
        session.start_s = event_time_s
    session.events += 1
    session.products.add(product_id)
    if event_type == "view":
        session.views += 1
        session.product_views[product_id] = session.product_views.get(product_id, 0) + 1
    elif event_type == "cart":
        session.carts += 1
        user.carts += 1
    elif event_type == "purchase":
        session.purchases += 1
        user.purchases += 1


def features_for(user: UserState, session: SessionState, user_session: str, product_id: int, price: float,
                 event_time: datetime, category_code: str | None, brand: str | None) -> dict[str, Any]:
    """Features of a cart-add, from the states BEFORE the cart-add is applied."""
    l1, l2, _ = category_levels(category_code)
    t = event_time.astimezone(UTC)
    ts = t.timestamp()
    return {
        "category_l1": l1,
        "category_l2": l2,
        "brand": brand or None,
        "price": float(price),
        "hour": t.hour,
        "weekday": t.isoweekday(),
        "session_events_before": session.events,
        "session_views_before": session.views,
        "session_carts_before": session.carts,
        "session_distinct_products": len(session.products),
        "session_duration_s": float(ts - session.start_s) if session.start_s is not None else 0.0,
        "product_views_in_session": session.product_views.get(product_id, 0),
        "user_prior_sessions": len(user.sessions - {user_session}),
        "user_prior_carts": user.carts - session.carts,
        "user_prior_purchases": user.purchases - session.purchases,
    }


def user_feature_rows(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Feature rows (with ids and label) for every cart-add of ONE user's events.

    ``events`` need the silver columns event_key, event_time (aware datetime), event_type, product_id,
    category_code, brand, price, user_id, user_session. The label is True when the same session
    purchases the same product at or after the cart-add.
    """
    ordered = sorted(events, key=lambda e: (e["event_time"], e["event_key"]))
    last_purchase: dict[tuple[str, int], datetime] = {}
    for e in ordered:
        if e["event_type"] == "purchase":
            k = (e["user_session"], e["product_id"])
            if k not in last_purchase or e["event_time"] > last_purchase[k]:
                last_purchase[k] = e["event_time"]
    user = UserState()
    sessions: dict[str, SessionState] = {}
    for e in ordered:
        sid = e["user_session"]
        session = sessions.setdefault(sid, SessionState())
        if e["event_type"] == "cart":
            feats = features_for(user, session, sid, e["product_id"], e["price"], e["event_time"],
                                 e["category_code"], e["brand"])
            bought = last_purchase.get((sid, e["product_id"]))
            yield {
                "event_key": e["event_key"],
                "event_time": e["event_time"],
                "user_id": e["user_id"],
                "user_session": sid,
                "product_id": e["product_id"],
                **feats,
                LABEL: bought is not None and bought >= e["event_time"],
            }
        update(user, session, sid, e["event_type"], e["product_id"], e["event_time"].timestamp())
