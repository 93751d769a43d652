"""The generator's oracle (each cart-add's true purchase probability) and the feature table made without the
pipeline: the same rows the gold job computes from the stream, through the shared feature definition."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from shopstream.events.generator import GeneratorConfig, generate, simulate
from shopstream.events.validation import validate_batch
from shopstream.features import FEATURE_COLUMNS, user_feature_rows
from shopstream.training.generated import ORACLE_COLUMNS, TABLE_COLUMNS, generated_cart_features

N, SEED, DAYS = 30_000, 5, 3.0


@pytest.fixture(scope="module")
def stream():
    s = generate(N, seed=SEED, days=DAYS)
    messages = list(s)
    valid = validate_batch([(v, "events", 0, i) for i, (_, v) in enumerate(messages)]).valid.to_pylist()
    unique: dict[str, dict] = {}
    for e in valid:
        unique.setdefault(e["event_key"], e)
    return s, unique


def test_the_truth_has_every_cart_adds_probability_and_the_events_do_not(stream):
    s, unique = stream
    truth, carts = s.truth, s.cart_add_truth()
    cart_keys = {k for k, e in unique.items() if e["event_type"] == "cart"}
    assert len(carts) == truth.cart_adds == len(cart_keys) and set(carts["event_key"]) == cart_keys
    assert carts["purchase_probability"].between(0, 1, inclusive="neither").all()
    assert np.allclose(carts["purchase_probability"], 1 / (1 + np.exp(-carts["purchase_logit"])))
    assert carts["user_effect"].std() == pytest.approx(0.5, abs=0.1)        # the unobserved per-user part
    # the probabilities are the ones the outcomes were drawn from: their mean is the conversion rate
    rate = truth.cart_adds_converted / truth.cart_adds
    assert carts["purchase_probability"].mean() == pytest.approx(rate, abs=3 * np.sqrt(rate * (1 - rate) / len(carts)))
    assert not any("probab" in k or "logit" in k for e in list(unique.values())[:100] for k in e)


def test_simulate_gives_the_streams_unique_events(stream):
    _, unique = stream
    events = simulate(GeneratorConfig(n_events=N, seed=SEED, days=DAYS))
    assert len(events.t_s) == len(unique)
    assert int((events.event_type == 1).sum()) == sum(e["event_type"] == "cart" for e in unique.values())
    assert np.isnan(events.logit[events.event_type != 1]).all() and not np.isnan(events.logit[events.event_type == 1]).any()


def test_generated_rows_are_the_gold_rows_of_the_stream(stream):
    s, unique = stream
    by_user: dict[int, list[dict]] = defaultdict(list)
    for e in unique.values():
        by_user[e["user_id"]].append(e)
    gold = pd.DataFrame([r for evs in by_user.values() for r in user_feature_rows(evs)])
    fast = generated_cart_features(N, seed=SEED, days=DAYS, invalid_rate=0.10, duplicate_rate=0.02, late_rate=0.02)
    assert list(fast.columns) == [*TABLE_COLUMNS, *ORACLE_COLUMNS]
    assert len(fast) == len(gold) == s.truth.cart_adds
    gold = gold.set_index("event_key").loc[fast["event_key"]].reset_index()
    for c in ["event_key", "user_id", "user_session", "product_id", *FEATURE_COLUMNS, "label"]:
        assert fast[c].tolist() == gold[c].tolist(), c
    assert (fast["event_time"] == pd.to_datetime(gold["event_time"], utc=True)).all()
    oracle = s.cart_add_truth().set_index("event_key").loc[fast["event_key"]]
    assert np.array_equal(fast["purchase_probability"].to_numpy(), oracle["purchase_probability"].to_numpy())
    assert fast["label"].mean() == pytest.approx(s.truth.cart_adds_converted / s.truth.cart_adds)
