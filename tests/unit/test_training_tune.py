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


def test_report_every_is_validated_and_kept():
    assert SearchSpace.load().report_every >= 1
    with pytest.raises(SearchSpaceError, match="report_every must be at least 1"):
        SearchSpace.from_dict({"params": {"eta": {"type": "float", "low": 0.1, "high": 0.2}},
                               "asha": {"report_every": 0}}, source="space.yaml")


def test_the_backend_follows_the_crossover_setting(tmp_path, monkeypatch):
    from shopstream.training.tune import choose_backend

    s = load_settings(state_dir=tmp_path)
    n = s.training.ray_min_rows
    assert choose_backend(s, n - 1)[0] == "sequential" and choose_backend(s, n)[0] == "ray"
    assert "SHOPSTREAM_TRAINING__RAY_MIN_ROWS" in choose_backend(s, n - 1)[1]
    monkeypatch.setenv("SHOPSTREAM_TRAINING__TUNE_BACKEND", "ray")
    assert choose_backend(load_settings(state_dir=tmp_path), 10)[0] == "ray"
    monkeypatch.setenv("SHOPSTREAM_TRAINING__TUNE_BACKEND", "sequential")
    assert choose_backend(load_settings(state_dir=tmp_path), 10**9)[0] == "sequential"


@pytest.fixture(scope="module")
def small_data():
    from shopstream.features import CATEGORICAL, FEATURE_COLUMNS
    from shopstream.training.dataset import FeatureSpec, categories_of, time_split, xy
    from shopstream.training.synthetic import synthetic_cart_features
    from shopstream.training.tune import TuneData

    split = time_split(synthetic_cart_features(4000, seed=3), 0.2, 0.1)
    spec = FeatureSpec(list(FEATURE_COLUMNS), list(CATEGORICAL))
    cats = categories_of(split.train, spec)
    return TuneData(*xy(split.train, spec, cats), *xy(split.valid, spec, cats))


def test_sequential_search_prunes_weak_trials_at_the_milestones(small_data, tmp_path):
    from shopstream.training.sequential import run_search

    s = load_settings(state_dir=tmp_path)
    spec = make_spec(s, trials=8, max_rounds=60)
    space = dict(spec.space)
    space["early_stopping_rounds"] = 0          # every trial would run all 60 rounds unless pruned
    space["asha"] = {"grace_period": 10, "reduction_factor": 3, "report_every": 10}
    spec.space = space
    result = run_search(small_data, spec, nthread=1)
    assert result.backend == "sequential" and len(result.trials) == 8
    rounds = [t.rounds for t in result.trials]
    assert max(rounds) == 60 and min(rounds) < 60          # some trials were stopped early by the pruner
    assert all(r % 10 == 0 for r in rounds)                 # ... at a milestone
    best = max(result.trials, key=lambda t: t.valid_pr_auc)
    assert result.best_valid_pr_auc == best.valid_pr_auc > 0.3 and result.best_config == best.config
    assert all(t.history_rounds[-1] == t.rounds and len(t.history) == len(t.history_rounds) for t in result.trials)


def test_sequential_search_keeps_the_best_so_far_when_the_budget_runs_out(small_data, tmp_path):
    from shopstream.training.sequential import run_search

    spec = make_spec(load_settings(state_dir=tmp_path), trials=50, max_rounds=20)
    spec.timeout_s = 0                          # the budget is spent after the first trial
    result = run_search(small_data, spec, nthread=1)
    assert len(result.trials) == 1 and result.best_valid_pr_auc > 0


def test_the_embedded_ray_head(tmp_path, monkeypatch):
    from shopstream.stack.ray_head import RayService
    from shopstream.training.ray_runtime import head_address

    monkeypatch.setenv("SHOPSTREAM_RAY__PORT", "17001")
    s = load_settings(state_dir=tmp_path)
    argv = RayService(s).specs()[0].argv
    assert argv[1:4] == ["start", "--head", "--block"] and argv[argv.index("--port") + 1] == "17001"
    assert argv[argv.index("--temp-dir") + 1] == str(ray_temp_dir(s))
    assert all(o in argv for o in ("--dashboard-agent-grpc-port", "--runtime-env-agent-port"))
    assert RayService.is_enabled(s) and head_address(s) is None        # enabled, but nothing listens
    monkeypatch.setenv("SHOPSTREAM_RAY__ADDRESS", "http://ray-head:8265")
    assert not RayService.is_enabled(load_settings(state_dir=tmp_path))   # a cluster replaces it
    monkeypatch.delenv("SHOPSTREAM_RAY__ADDRESS")
    monkeypatch.setenv("SHOPSTREAM_RAY__EMBEDDED", "false")
    assert not RayService.is_enabled(load_settings(state_dir=tmp_path))
