"""The served model: the pyfunc logged by the training code (saved locally here), its booster path and checks."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shopstream.features import CATEGORICAL, FEATURE_COLUMNS
from shopstream.serving.model import (
    BoosterPath,
    LoadedModel,
    example_features,
    feature_frame,
    probe_rows,
    verify_booster_path,
)
from shopstream.serving.scoring import NoModel, Scorer


@pytest.fixture(scope="module")
def pyfunc(tmp_path_factory):
    """A small XGBoost purchase-intent model saved as the training code logs it (models-from-code pyfunc)."""
    return save_pyfunc(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The same model with an isotonic calibration in its meta.json, as training logs it now."""
    return save_pyfunc(tmp_path_factory.mktemp("calibrated"), calibration="isotonic")


def save_pyfunc(d, calibration: str | None = None):
    import mlflow
    import numpy as np
    import xgboost as xgb
    from mlflow.models import infer_signature

    from shopstream.training.dataset import FeatureSpec, categories_of, xy
    from shopstream.training.synthetic import synthetic_cart_features
    from shopstream.training.train import PYFUNC_CODE

    df = synthetic_cart_features(1500, seed=3)
    spec = FeatureSpec(list(FEATURE_COLUMNS), list(CATEGORICAL))
    cats = categories_of(df, spec)
    x, y = xy(df, spec, cats)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "tree_method": "hist", "max_cat_to_onehot": 4,
                         "nthread": 1}, xgb.DMatrix(x, label=y, enable_categorical=True), 20)
    booster.save_model(d / "booster.ubj")
    meta = {"features": spec.features, "categories": cats, "threshold": 0.37}
    if calibration:
        from shopstream.training import calibration as cal

        raw = booster.predict(xgb.DMatrix(x, enable_categorical=True)).astype("float64")
        meta["calibration"] = cal.fit(y, raw, calibration)
    (d / "meta.json").write_text(json.dumps(meta))
    example = df[spec.features].head(5).reset_index(drop=True)
    mlflow.pyfunc.save_model(str(d / "pyfunc"), python_model=str(PYFUNC_CODE),
                             artifacts={"booster": str(d / "booster.ubj"), "meta": str(d / "meta.json")},
                             signature=infer_signature(example, np.zeros(5)), input_example=example)
    return mlflow.pyfunc.load_model(str(d / "pyfunc"))


def loaded(model) -> LoadedModel:
    return LoadedModel("m", "1", model, 0.37, None, datetime.now(UTC))


def test_a_single_row_without_brand_or_category_is_scored(pyfunc):
    row = {**example_features(), "brand": None, "category_l1": None, "category_l2": None}
    frame = feature_frame([row])
    assert all(frame[c].dtype == object for c in CATEGORICAL)
    p = loaded(pyfunc).predict_pyfunc([row])
    assert len(p) == 1 and 0.0 <= p[0] <= 1.0


def test_the_booster_path_gives_exactly_the_pyfunc_probabilities(pyfunc):
    lm = loaded(pyfunc)
    fast = verify_booster_path(lm)
    assert isinstance(fast, BoosterPath)
    rows = probe_rows(pyfunc.unwrap_python_model().categories, n=300)
    assert fast(rows) == lm.predict_pyfunc(rows)
    served = replace(lm, booster=fast)
    assert served.path == "booster" and served.predict(rows[:7]) == lm.predict_pyfunc(rows[:7])


def test_a_calibrated_model_serves_calibrated_probabilities_on_both_paths(pyfunc, calibrated):
    from shopstream.training.pyfunc_model import calibrate

    inner = calibrated.unwrap_python_model()
    assert inner.calibration["method"] == "isotonic"
    rows = probe_rows(inner.categories, n=200)
    raw = loaded(pyfunc).predict_pyfunc(rows)               # the same booster without calibration
    lm = loaded(calibrated)
    want = lm.predict_pyfunc(rows)
    assert want == calibrate(raw, inner.calibration).tolist() and want != raw
    fast = verify_booster_path(lm)
    assert isinstance(fast, BoosterPath) and fast(rows) == want


def test_a_booster_path_that_would_differ_is_not_used(pyfunc):
    inner = pyfunc.unwrap_python_model()
    saved = dict(inner.categories)
    try:
        # the booster path would code brands differently from the pyfunc's preprocessing
        inner.categories = {**saved, "brand": list(reversed(saved["brand"]))}
        fast = BoosterPath(inner)
        inner.categories = saved
        rows = probe_rows(saved)
        assert fast(rows) != loaded(pyfunc).predict_pyfunc(rows)

        class Drifted:   # a pyfunc whose preprocessing no longer matches its booster path
            def __init__(self, model):
                self.model = model

            def unwrap_python_model(self):
                return type("Inner", (), {"booster": inner.booster, "features": inner.features,
                                          "categories": {**saved, "brand": list(reversed(saved["brand"]))}})()

            def predict(self, frame):
                return self.model.predict(frame)

        assert verify_booster_path(loaded(Drifted(pyfunc))) is None
    finally:
        inner.categories = saved


def test_probe_rows_cover_known_unknown_and_missing_categories(pyfunc):
    cats = pyfunc.unwrap_python_model().categories
    rows = probe_rows(cats)
    for c in CATEGORICAL:
        values = [r[c] for r in rows]
        assert None in values
        assert any(v in cats[c] for v in values) and any(v is not None and v not in cats[c] for v in values)


class _Manager:
    """The part of ModelManager the scorer reads (current model and problem)."""

    def __init__(self, current):
        self.current, self.problem = current, None if current else "no model yet"


def test_the_scorer_answers_each_request_with_one_model_and_its_own_rows(pyfunc, tmp_path):
    import asyncio

    from shopstream.serving.feature_store import Event, Keys, connect_async
    from shopstream.settings import load_settings
    from shopstream.stack.base import free_port
    from shopstream.stack.redis_server import RedisService

    s = load_settings(state_dir=tmp_path, redis={"port": free_port()})
    svc = RedisService(s)
    svc.start()
    lm = loaded(pyfunc)
    events = [[Event(f"k{i}-{j}", 1_570_000_000_000_000 + j, "cart", 100 + j, i, f"s{i}", 10.0 + j)
               for j in range(1 + i % 3)] for i in range(40)]

    async def run():
        client = connect_async(s)
        rounds: list[int] = []
        try:
            for path in (lm, replace(lm, booster=verify_booster_path(lm))):   # pyfunc path, then booster path
                scorer = Scorer(_Manager(path), client, Keys("unit:"), on_round=rounds.append)
                scorer.start()
                results = await asyncio.gather(*(scorer.score(evs) for evs in events))
                await scorer.close()
                for evs, scored in zip(events, results, strict=True):
                    assert [lk.event.event_key for lk in scored.lookups] == [e.event_key for e in evs]
                    assert scored.probabilities == lm.predict_pyfunc([lk.features for lk in scored.lookups])
                    assert scored.model is path
            assert sum(rounds) == 2 * sum(len(evs) for evs in events) and max(rounds) > 3   # batched
            empty = Scorer(_Manager(None), client, Keys("unit:"))
            empty.start()
            with pytest.raises(NoModel):
                await empty.score(events[0])
            await empty.close()
        finally:
            await client.aclose()

    try:
        asyncio.run(run())
    finally:
        svc.stop()
