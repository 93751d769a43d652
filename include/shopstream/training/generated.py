"""``ml.cart_features`` rows of a generated stream without running the pipeline, with the generator's oracle.

The rows are what the gold job would write for the stream (its unique valid events replayed per user through
the shared feature definition, :func:`shopstream.features.user_feature_rows`), computed straight from the
simulation (:func:`shopstream.events.generator.simulate`): no broker, lake, Spark or PostgreSQL. Each row also
carries the truth of its cart-add, which no model may use as a feature: ``purchase_probability`` (the
probability the generator drew the outcome from), ``purchase_logit`` and ``user_effect`` (the unobserved
per-user part of the logit). Benchmarks use them to put a model beside the best possible answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from shopstream.events.generator import GeneratorConfig, SimulatedEvents, cart_add_truth, simulate
from shopstream.events.schema import EVENT_TYPES, event_key
from shopstream.features import FEATURE_COLUMNS, ID_COLUMNS, LABEL, user_feature_rows

TABLE_COLUMNS = [*ID_COLUMNS, *FEATURE_COLUMNS, LABEL]
ORACLE_COLUMNS = ["purchase_probability", "purchase_logit", "user_effect"]


EVENTS_PER_CART_ADD = 13.9  # unique events per cart-add of the generator (1M events over 30 days: 72k cart-adds)


def generated_cart_features(n_events: int, seed: int = 42, days: float = 30.0, start: datetime | None = None,
                            **options: Any) -> pd.DataFrame:
    """Feature rows (table columns + :data:`ORACLE_COLUMNS`) of the stream ``GeneratorConfig(n_events, ...)``.

    Fault rates default to zero here (they do not change which unique events exist, only how many messages
    carry them), so ``n_events`` is the number of unique events. Sorted by event time, then event key.
    """
    options = {"invalid_rate": 0.0, "duplicate_rate": 0.0, "late_rate": 0.0, **options}
    config = GeneratorConfig(n_events=n_events, seed=seed, days=days, **({"start": start} if start else {}), **options)
    return cart_features_of(simulate(config))


def cart_features_of(events: SimulatedEvents) -> pd.DataFrame:
    """The gold feature rows of simulated events, with each cart-add's truth joined by event key."""
    order = np.lexsort((events.t_s, events.user))
    users = events.user[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    t_s, etype, prod, sess = (a[order].tolist() for a in (events.t_s, events.event_type, events.product,
                                                           events.session))
    products, sessions, user_ids = events.products, events.sessions, events.user_ids
    moments: dict[int, datetime] = {}
    rows: list[dict[str, Any]] = []
    starts = [0, *bounds.tolist()]
    ends = [*bounds.tolist(), len(order)]
    for a, b, u in zip(starts, ends, users[starts].tolist() if len(order) else [], strict=True):
        uid = user_ids[u]
        user_events = []
        for i in range(a, b):
            ts = t_s[i]
            when = moments.get(ts)
            if when is None:
                when = moments[ts] = datetime.fromtimestamp(ts, UTC)
            pid, _cid, code, brand, price = products[prod[i]]
            name, sid = EVENT_TYPES[etype[i]], sessions[sess[i]]
            user_events.append({
                "event_key": event_key(ts * 1_000_000, name, pid, uid, sid), "event_time": when,
                "event_type": name, "product_id": pid, "category_code": code, "brand": brand, "price": price,
                "user_id": uid, "user_session": sid,
            })
        rows.extend(user_feature_rows(user_events))
        if len(moments) > 1_000_000:
            moments.clear()
    df = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    truth = cart_add_truth(events).set_index("event_key")[ORACLE_COLUMNS]
    df = df.join(truth, on="event_key")
    df["event_time"] = pd.to_datetime(df["event_time"], utc=True)
    return df.sort_values(["event_time", "event_key"], kind="stable").reset_index(drop=True)
