"""Synthetic ``ml.cart_features`` rows whose label depends on the features, for tests and benchmarks.

The real rows come from the gold job; these follow the same table contract (see
:mod:`shopstream.warehouse.ddl`) and a known label model, so a trained model has something to find:
cheaper products, more views of the product and of the session, and returning buyers make a purchase more
likely. ``signal`` scales that dependence (0 = labels independent of the features, for drift tests).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg

COLUMNS = [
    "event_key", "event_time", "user_id", "user_session", "product_id", "category_l1", "category_l2", "brand",
    "price", "hour", "weekday", "session_events_before", "session_views_before", "session_carts_before",
    "session_distinct_products", "session_duration_s", "product_views_in_session", "user_prior_sessions",
    "user_prior_carts", "user_prior_purchases", "label",
]

_CATEGORIES = {
    "electronics": (["smartphone", "audio", "video", "tablet"], 250.0),
    "appliances": (["kitchen", "environment", "personal"], 120.0),
    "computers": (["notebook", "peripherals", "components"], 450.0),
    "apparel": (["shoes", "costume", "bag"], 45.0),
    "furniture": (["living_room", "bedroom"], 180.0),
}
_BRANDS = ["samsung", "apple", "xiaomi", "huawei", "lg", "bosch", "lenovo", "sony", "nike", "ikea"]
_BRAND_EFFECT = {"apple": 0.35, "samsung": 0.15, "xiaomi": 0.1, "nike": 0.2}
_CATEGORY_EFFECT = {"electronics": 0.1, "appliances": -0.1, "computers": -0.25, "apparel": 0.3, "furniture": -0.3}


def synthetic_cart_features(
    n: int = 5000,
    days: float = 30.0,
    seed: int = 7,
    end: datetime | None = None,
    signal: float = 1.0,
    key_prefix: str = "syn",
) -> pd.DataFrame:
    """``n`` cart-add rows spread over the ``days`` before ``end`` (UTC), sorted by event time."""
    rng = np.random.default_rng(seed)
    end = end or datetime(2026, 11, 1, tzinfo=UTC)
    start = end - timedelta(days=days)
    n_users = max(10, n // 4)

    # sessions with 1..4 cart-adds each, until there are n rows
    session_sizes: list[int] = []
    while sum(session_sizes) < n:
        session_sizes.append(int(rng.choice([1, 1, 1, 2, 2, 3, 4])))
    session_sizes[-1] -= sum(session_sizes) - n
    n_sessions = len(session_sizes)
    sess_user = rng.integers(1, n_users + 1, n_sessions)
    sess_start = rng.uniform(0, days * 86400 - 3600, n_sessions)
    sess_views = rng.poisson(4.0, n_sessions)

    rows: dict[str, list] = {c: [] for c in COLUMNS}
    cat_names = list(_CATEGORIES)
    user_prior_sessions = rng.geometric(0.35, n_users + 1) - 1
    user_prior_purchases = rng.binomial(user_prior_sessions, 0.25)
    i = 0
    for s, size in enumerate(session_sizes):
        user = int(sess_user[s])
        t = sess_start[s]
        views = int(sess_views[s])
        events = views
        distinct = max(1, views // 2)
        for k in range(size):
            t += rng.uniform(20, 600)
            l1 = cat_names[int(rng.integers(0, len(cat_names)))] if rng.random() > 0.05 else None
            subs, base = _CATEGORIES[l1] if l1 else (["other"], 80.0)
            l2 = subs[int(rng.integers(0, len(subs)))] if l1 else None
            brand = _BRANDS[int(rng.integers(0, len(_BRANDS)))] if rng.random() > 0.1 else None
            price = float(np.round(base * rng.lognormal(0.0, 0.6), 2))
            product_views = int(rng.poisson(1.5))
            views += product_views
            events += product_views + (1 if k else 0)
            when = start + timedelta(seconds=float(t))
            rows["event_key"].append(f"{key_prefix}-{seed}-{i:07d}")
            rows["event_time"].append(when)
            rows["user_id"].append(user)
            rows["user_session"].append(f"{key_prefix}-{seed}-s{s:06d}")
            rows["product_id"].append(int(rng.integers(1_000_000, 1_050_000)))
            rows["category_l1"].append(l1)
            rows["category_l2"].append(l2)
            rows["brand"].append(brand)
            rows["price"].append(price)
            rows["hour"].append(when.hour)
            rows["weekday"].append(when.isoweekday())
            rows["session_events_before"].append(events)
            rows["session_views_before"].append(views)
            rows["session_carts_before"].append(k)
            rows["session_distinct_products"].append(distinct + k)
            rows["session_duration_s"].append(float(t - sess_start[s]))
            rows["product_views_in_session"].append(product_views)
            rows["user_prior_sessions"].append(int(user_prior_sessions[user]))
            rows["user_prior_carts"].append(int(user_prior_sessions[user] * 0.8 + rng.poisson(0.5)))
            rows["user_prior_purchases"].append(int(user_prior_purchases[user]))
            rows["label"].append(False)
            i += 1

    df = pd.DataFrame(rows)
    logit = (
        -1.75
        - 0.75 * np.log(df["price"] / 100.0)
        + 0.55 * np.log1p(df["product_views_in_session"])
        + 0.25 * np.log1p(df["session_views_before"])
        + 0.9 * (df["user_prior_purchases"] > 0)
        + 0.15 * np.log1p(df["user_prior_sessions"])
        - 0.3 * df["session_carts_before"]
        + df["brand"].map(_BRAND_EFFECT).fillna(0.0).astype(float)
        + df["category_l1"].map(_CATEGORY_EFFECT).fillna(0.0).astype(float)
        + 0.2 * ((df["hour"] >= 18) & (df["hour"] <= 22))
    )
    logit = signal * logit + (1 - signal) * -0.9
    p = 1.0 / (1.0 + np.exp(-logit))
    df["label"] = rng.random(len(df)) < p
    return df.sort_values(["event_time", "event_key"], kind="stable").reset_index(drop=True)


def write_cart_features(conn: psycopg.Connection, df: pd.DataFrame, replace: bool = False) -> int:
    """Upsert rows into ``ml.cart_features`` by event key (COPY into a temp table, then one insert)."""
    from shopstream.warehouse.ddl import ensure_schemas

    ensure_schemas(conn, only=("ml",))
    buf = io.StringIO()
    df[COLUMNS].to_csv(buf, index=False, header=False, date_format="%Y-%m-%d %H:%M:%S.%f%z")
    cols = ", ".join(COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "event_key")
    with conn.transaction():
        if replace:
            conn.execute("truncate ml.cart_features")
        conn.execute("create temp table cart_features_in (like ml.cart_features) on commit drop")
        with conn.cursor().copy(f"copy cart_features_in ({cols}) from stdin with (format csv)") as copy:
            copy.write(buf.getvalue())
        cur = conn.execute(
            f"insert into ml.cart_features ({cols}) select {cols} from cart_features_in "
            f"on conflict (event_key) do update set {updates}"
        )
        return cur.rowcount
