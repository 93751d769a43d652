"""Search space parsing and validation, tune spec, Ray temp dir (no Ray started here)."""

from __future__ import annotations

import pytest

from shopstream.settings import load_settings
from shopstream.training.tune import (
    DEFAULT_SPACE,
    SearchSpace,
    SearchSpaceError,
    TrialResult,
    TuneResult,
    best_of,
    make_spec,
    ray_temp_dir,
)


def test_packaged_search_space_loads():
    space = SearchSpace.load()
    assert space.source == str(DEFAULT_SPACE)
    assert space.max_rounds >= 50 and "max_depth" in space.params
    dists = space.optuna_space()
    assert set(dists) == set(space.params)
    params = space.xgb_params({"max_depth": 3}, nthread=1, seed=5)
    assert params["objective"] == "binary:logistic" and params["max_depth"] == 3 and params["nthread"] == 1
    assert params["eval_metric"][-1] == "aucpr"   # early stopping follows validation PR-AUC


def test_round_trip_through_dict():
    space = SearchSpace.load()
    assert SearchSpace.from_dict(space.to_dict(), source=space.source) == space


@pytest.mark.parametrize(("params", "match"), [
    ({}, "params is empty"),
    ({"eta": {"low": 0.1, "high": 0.2}}, "params.eta needs a mapping with a type"),
    ({"eta": {"type": "float", "low": 0.3, "high": 0.2}}, "low <= high"),
    ({"eta": {"type": "float", "low": 0, "high": 0.2, "log": True}}, "low must be > 0"),
    ({"booster": {"type": "categorical", "choices": []}}, "non-empty choices"),
    ({"eta": {"type": "normal", "low": 0, "high": 1}}, "unknown type"),
])
def test_bad_search_space_names_the_key(params, match):
    with pytest.raises(SearchSpaceError, match=match):
        SearchSpace.from_dict({"params": params}, source="space.yaml")


def test_missing_file_names_the_setting(tmp_path):
    with pytest.raises(SearchSpaceError, match="SHOPSTREAM_TRAINING__SEARCH_SPACE"):
        SearchSpace.load(tmp_path / "nope.yaml")


def test_make_spec_applies_form_overrides(tmp_path):
    s = load_settings(state_dir=tmp_path)
    spec = make_spec(s, trials=3, max_rounds=7)
    assert spec.trials == 3 and spec.space["max_rounds"] == 7
    assert spec.max_concurrent == s.ray.num_cpus // s.ray.cpus_per_trial
    assert make_spec(s).trials == s.training.trials


def test_ray_temp_dir_is_short_and_per_state_dir(tmp_path):
    a = ray_temp_dir(load_settings(state_dir=tmp_path / "a" / ("x" * 80)))
    b = ray_temp_dir(load_settings(state_dir=tmp_path / "b"))
    assert a != b
    assert len(str(a)) < 20 and str(a).startswith("/tmp/ray-")


def test_best_of_history():
    assert best_of({"aucpr": [0.5, 0.7, 0.7, 0.6], "logloss": [0.6, 0.5, 0.45, 0.5]}) == (0.7, 2, 0.5)


def test_tune_result_round_trip():
    r = TuneResult({"eta": 0.1}, 0.6, 12, [TrialResult(0, {"eta": 0.1}, 0.6, 0.5, 12, 40, 1.5, history=[0.5, 0.6])],
                   3.0, "ray-local", {"max_rounds": 40})
    assert TuneResult.from_dict(r.to_dict()) == r
