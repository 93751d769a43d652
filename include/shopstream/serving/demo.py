"""The serving part of the demo summary: start the API (with a champion), ask it once, say where it is.

``sample(settings)`` returns the lines to print. It starts the embedded serving processes (the feature-store
consumer and the API, :class:`shopstream.stack.serving.ServingService`) when a champion exists, waits until
the feature store has caught up with the raw topic, builds a cart-add for a recent session of the warehouse
(its last viewed product, 30 s after its last event) and prints the answer and a curl line to try.
"""

from __future__ import annotations

import json
import shlex
import time
from datetime import timedelta
from typing import Any

from shopstream.settings import Settings

CATCH_UP_TIMEOUT_S = 180.0


def feature_store_lag(settings: Settings, timeout: float = 10.0) -> dict[int, int]:
    """Messages of the raw topic the feature-store consumer has not applied yet, per partition."""
    from shopstream.landing.service import end_offsets
    from shopstream.serving.feature_store import Keys, connect

    ends = end_offsets(settings, settings.kafka.raw_topic, timeout)
    client = connect(settings)
    try:
        done = client.hgetall(Keys(settings.redis.key_prefix).offsets(settings.serving.consumer_group,
                                                                       settings.kafka.raw_topic))
    finally:
        client.close()
    return {p: max(0, end - int(done.get(str(p), 0))) for p, end in ends.items()}


def sample_event(settings: Settings) -> dict[str, Any] | None:
    """A cart-add for a recent session with views (from silver.events), or None when silver is empty."""
    import psycopg

    sql = """
        with recent as (
            select user_session, user_id, max(event_time) as last_time, count(*) as n,
                   count(*) filter (where event_type = 'view') as views,
                   count(*) filter (where event_type = 'purchase') as purchases
            from silver.events
            where event_time > (select max(event_time) from silver.events) - interval '1 day'
            group by user_session, user_id
        )
        select r.user_session, r.user_id, r.last_time, e.product_id, e.category_id, e.category_code, e.brand,
               e.price::float8
        from recent r
        join lateral (select * from silver.events x where x.user_session = r.user_session and x.event_type = 'view'
                      order by x.event_time desc limit 1) e on true
        where r.views >= 3 and r.purchases = 0
        order by r.n desc, r.user_session
        limit 1
    """
    try:
        with psycopg.connect(settings.postgres.dsn(), connect_timeout=5) as conn:
            row = conn.execute(sql).fetchone()
    except psycopg.Error:
        return None
    if row is None:
        return None
    session, user, last, product, category, code, brand, price = row
    when = last + timedelta(seconds=30)
    return {"event_time": when.strftime("%Y-%m-%d %H:%M:%S UTC"), "event_type": "cart", "product_id": product,
            "category_id": category, "category_code": code, "brand": brand, "price": round(price, 2),
            "user_id": user, "user_session": session}


def sample(settings: Settings) -> list[str]:
    """Start serving if there is a champion, ask it about one cart-add; the demo summary's lines."""
    import httpx

    from shopstream.serving.schemas import EXAMPLE_EVENT
    from shopstream.stack.base import StackError
    from shopstream.stack.serving import ServingService

    s = settings.serving
    head = "Serving API"
    if not s.enabled:
        return [f"{head} disabled (SHOPSTREAM_SERVING__ENABLED=false); run `shopstream features` and "
                "`shopstream serve` yourself"]
    svc = ServingService(settings)
    champion = svc.champion()
    if champion is None:
        return [f"{head} not started: {settings.mlflow.registered_model} has no 'champion' yet (the training DAG "
                "promotes one through the gate); then `shopstream up` starts it"]
    try:
        svc.start()
    except StackError as e:
        return [f"{head} did not start: {str(e).splitlines()[0]} (logs: `shopstream logs serving`)"]

    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    lag: dict[int, int] = {}
    while time.monotonic() < deadline:
        try:
            lag = feature_store_lag(settings)
        except Exception:  # noqa: BLE001 - the broker may be busy: try again
            lag = {}
        if lag and sum(lag.values()) == 0:
            break
        time.sleep(2)
    behind = sum(lag.values()) if lag else None

    event = sample_event(settings) or EXAMPLE_EVENT
    url = s.base_url
    key = s.api_key.get_secret_value()
    headers = {"X-API-Key": key} if key else {}
    try:
        with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
            res = client.post("/predict", json=event)
    except httpx.HTTPError as e:
        return [f"{head} {url}/docs  (POST /predict) - request failed: {e}"]
    if res.status_code != 200:
        return [f"{head} {url}/docs  (POST /predict) - sample answered HTTP {res.status_code}: {res.text[:200]}"]
    p = res.json()
    f = p["features"]
    store = ("feature store up to date" if behind == 0 else
             f"feature store {behind:,} events behind" if behind is not None else "feature store lag unknown")
    what = ", ".join(str(x) for x in (event.get("category_code"), event.get("brand")) if x)
    return [
        f"{head} {url}/docs  (POST /predict, GET /ready, /metrics); model {p['model']['name']} "
        f"v{p['model_version']} (threshold {p['threshold']:.3f}); {store}",
        f"  sample cart-add: user {event['user_id']}, session {str(event['user_session'])[:8]}..., product "
        f"{event['product_id']} ({what or 'no category'}, {event['price']}) after {f['session_events_before']} "
        f"events ({f['session_views_before']} views, {f['product_views_in_session']} of this product)",
        f"  -> P(purchase) {p['probability']:.3f}: {'likely purchase' if p['decision'] else 'unlikely'} "
        f"(features: {p['feature_source']}, session {'known' if p['session_found'] else 'new'})",
        f"  try: curl -s {url}/predict -H 'content-type: application/json'"
        f"{' -H X-API-Key:$SHOPSTREAM_SERVING__API_KEY' if key else ''} -d {shlex.quote(json.dumps(event))}",
    ]
