"""Training data: time split (test = most recent), no leakage across boundaries, the data check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from shopstream.training.dataset import (
    DataCheckError,
    FeatureSpec,
    check_split,
    feature_spec_from_columns,
    leakage_problems,
    load_split,
    save_split,
    time_split,
)
from shopstream.training.synthetic import COLUMNS, synthetic_cart_features


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return synthetic_cart_features(3000, days=30, seed=3)


def spec() -> FeatureSpec:
    text = {"event_key", "user_session", "category_l1", "category_l2", "brand"}
    return feature_spec_from_columns([(c, "text" if c in text else "integer") for c in COLUMNS])


def test_feature_contract_excludes_ids_and_label():
    s = spec()
    assert not {"event_key", "event_time", "user_id", "user_session", "product_id", "label"} & set(s.features)
    assert s.categorical == ["category_l1", "category_l2", "brand"]
    assert s.features[:3] == ["category_l1", "category_l2", "brand"] and "price" in s.features
    assert len(s.features) == len(COLUMNS) - 6


def test_split_is_by_time_with_test_most_recent(rows):
    split = time_split(rows.sample(frac=1, random_state=1), valid_share=0.15, test_share=0.15)
    assert split.train["event_time"].max() < split.valid["event_time"].min()
    assert split.valid["event_time"].max() < split.test["event_time"].min()
    assert split.test["event_time"].max() == rows["event_time"].max()
    assert split.test_start == split.test["event_time"].min()
    n = len(rows)
    assert abs(len(split.test) - 0.15 * n) <= 5
    # every row is in exactly one split, or was purged
    kept = len(split.train) + len(split.valid) + len(split.test)
    assert kept + split.purged["train"] + split.purged["valid"] == n


def test_sessions_crossing_a_boundary_are_purged_from_the_earlier_split():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    df = pd.DataFrame({
        "event_key": [f"k{i}" for i in range(10)],
        "event_time": [t0 + timedelta(hours=i) for i in range(10)],
        "user_session": ["a", "b", "c", "d", "e", "f", "g", "x", "x", "h"],
        "label": [True, False] * 5,
    })
    split = time_split(df, valid_share=0.2, test_share=0.2)
    # test = k8, k9 (session x starts in valid at k7): k7 is purged from valid
    assert list(split.test["event_key"]) == ["k8", "k9"]
    assert "k7" not in set(split.valid["event_key"])
    assert split.purged["valid"] == 1
    assert leakage_problems(split) == []


def test_no_leakage_on_realistic_rows(rows):
    split = time_split(rows, 0.15, 0.15)
    assert leakage_problems(split) == []
    assert split.purged["train"] + split.purged["valid"] > 0  # synthetic sessions do cross boundaries


def test_leakage_is_detected():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    frame = pd.DataFrame({"event_key": ["a", "b"], "event_time": [t0, t0 + timedelta(hours=1)],
                          "user_session": ["s", "s"], "label": [True, False]})
    from shopstream.training.dataset import Split

    bad = Split(frame.iloc[[1]], frame.iloc[0:0], frame.iloc[[0]])
    problems = leakage_problems(bad)
    assert any(p.startswith("train ends at") and "test starts at" in p for p in problems)
    assert any("sessions are in both train and test" in p for p in problems)


def test_split_is_deterministic(rows):
    a = time_split(rows, 0.15, 0.15)
    b = time_split(rows.iloc[::-1], 0.15, 0.15)
    pd.testing.assert_frame_equal(a.test, b.test)
    pd.testing.assert_frame_equal(a.train, b.train)


def test_data_check_passes_on_good_rows(rows):
    check_split(time_split(rows, 0.15, 0.15), min_rows=1000, min_class_rows=20)


def test_data_check_fails_on_too_few_rows(rows):
    small = rows.head(300)
    with pytest.raises(DataCheckError, match="SHOPSTREAM_TRAINING__MIN_ROWS=1000"):
        check_split(time_split(small, 0.15, 0.15), min_rows=1000, min_class_rows=5)


def test_data_check_fails_on_a_single_class(rows):
    one_class = rows.assign(label=False)
    with pytest.raises(DataCheckError, match="single class") as exc:
        check_split(time_split(one_class, 0.15, 0.15), min_rows=100, min_class_rows=5)
    assert "train has a single class" in str(exc.value) and "test has a single class" in str(exc.value)


def test_data_check_fails_on_too_few_positives_in_test(rows):
    split = time_split(rows, 0.15, 0.15)
    split.test = split.test.assign(label=[True] * 3 + [False] * (len(split.test) - 3))
    with pytest.raises(DataCheckError, match="test has 3 positives"):
        check_split(split, min_rows=100, min_class_rows=20)


def test_data_check_fails_on_an_empty_window():
    empty = synthetic_cart_features(10).iloc[0:0]
    with pytest.raises(DataCheckError, match="holds 0 rows"):
        check_split(time_split(empty, 0.15, 0.15), min_rows=10, min_class_rows=1)


def test_split_files_round_trip(rows, tmp_path):
    split = time_split(rows, 0.15, 0.15)
    save_split(split, spec(), tmp_path)
    back, back_spec = load_split(tmp_path)
    assert back_spec == spec()
    assert len(back.test) == len(split.test) and back.test_start == split.test_start
    assert back.summary()["test"]["positives"] == split.summary()["test"]["positives"]


def test_synthetic_label_depends_on_the_features(rows):
    cheap = rows["price"] < rows["price"].median()
    assert rows[cheap]["label"].mean() > rows[~cheap]["label"].mean() + 0.1
    returning = rows["user_prior_purchases"] > 0
    assert rows[returning]["label"].mean() > rows[~returning]["label"].mean() + 0.05
    viewed = rows["product_views_in_session"] >= 2
    assert rows[viewed]["label"].mean() > rows[~viewed]["label"].mean()
    assert 0.2 < rows["label"].mean() < 0.45
    noise = synthetic_cart_features(3000, seed=3, signal=0.0)
    cheap0 = noise["price"] < noise["price"].median()
    assert abs(noise[cheap0]["label"].mean() - noise[~cheap0]["label"].mean()) < 0.06


def test_old_local_run_dirs_are_pruned(tmp_path):
    import os
    import time

    from shopstream.settings import load_settings
    from shopstream.training.tracking import prune_run_dirs, run_dir

    s = load_settings(state_dir=tmp_path)
    old, new = run_dir(s, "old-run"), run_dir(s, "new-run")
    week_ago = time.time() - 8 * 86400
    os.utime(old, (week_ago, week_ago))
    assert prune_run_dirs(s, keep_days=7) == 1
    assert not old.exists() and new.exists()


def test_the_printed_experiment_link_opens_the_model_training_view():
    from shopstream.training.tracking import experiment_url

    url = experiment_url("http://127.0.0.1:15000/", "7")
    assert url == "http://127.0.0.1:15000/#/experiments/7/runs?workflowType=machine_learning"
