"""The /predict request contract: as strict as the stream's validation, and 422s that name the field."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from shopstream.events.validation import validate_batch
from shopstream.features import FEATURE_COLUMNS
from shopstream.serving.feature_store import Event
from shopstream.serving.schemas import EXAMPLE_EVENT, TIME_PATTERN, CartEvent, Features, predict_request

Batch, Body = predict_request(5)
BODY = TypeAdapter(Body)


def errors_of(body) -> list[tuple]:
    with pytest.raises(ValidationError) as exc:
        BODY.validate_python(body)
    return [e["loc"] for e in exc.value.errors()]


def test_a_contract_event_is_accepted_and_keyed_as_on_the_stream():
    ev = BODY.validate_python(EXAMPLE_EVENT)
    assert isinstance(ev, CartEvent)
    e = Event.from_mapping(ev.model_dump())
    landed = validate_batch([(orjson.dumps(EXAMPLE_EVENT), "t", 0, 0)]).valid.to_pylist()[0]
    assert e.event_key == landed["event_key"]
    assert BODY.validate_python({k: v for k, v in EXAMPLE_EVENT.items() if k != "event_type"}).event_type == "cart"


def test_a_batch_is_a_list_of_events_within_the_limit():
    batch = BODY.validate_python({"events": [EXAMPLE_EVENT] * 5})
    assert isinstance(batch, Batch) and len(batch.events) == 5
    assert errors_of({"events": [EXAMPLE_EVENT] * 6}) == [("batch", "events")]
    assert errors_of({"events": []}) == [("batch", "events")]
    assert errors_of({"events": [EXAMPLE_EVENT], "extra": 1}) == [("batch", "extra")]


@pytest.mark.parametrize(("field", "value"), [
    ("product_id", "1004856"), ("product_id", 1004856.0), ("product_id", True), ("product_id", 2**63),
    ("category_id", None), ("user_id", -(2**63) - 1), ("price", -0.01), ("price", "130.76"), ("price", False),
    ("price", float("inf")), ("price", float("nan")), ("user_session", ""), ("user_session", 5),
    ("event_time", "2019-02-30 10:00:00 UTC"), ("event_time", "2019-10-01T10:00:00"), ("event_time", 1569924000),
    ("event_type", "view"), ("brand", 12), ("category_code", ["a"]),
])
def test_a_bad_field_is_named(field, value):
    assert errors_of({**EXAMPLE_EVENT, field: value}) == [("event", field)]


@pytest.mark.parametrize("field", ["event_time", "product_id", "category_id", "price", "user_id", "user_session"])
def test_a_missing_field_is_named(field):
    assert errors_of({k: v for k, v in EXAMPLE_EVENT.items() if k != field}) == [("event", field)]


def test_a_bad_event_in_a_batch_is_named_with_its_index():
    assert errors_of({"events": [EXAMPLE_EVENT, {**EXAMPLE_EVENT, "price": "x"}]}) == [("batch", "events", 1, "price")]


def test_the_features_model_is_the_shared_feature_list():
    assert tuple(Features.model_fields) == FEATURE_COLUMNS


def test_the_documented_time_pattern_matches_the_accepted_forms():
    import re

    for ok in ("2019-10-01 00:00:04 UTC", "2019-10-01T00:00:04Z", "2019-10-01T00:00:04.5+03:00"):
        assert re.match(TIME_PATTERN, ok) and BODY.validate_python({**EXAMPLE_EVENT, "event_time": ok})
    for bad in ("2019-10-01T00:00:04", "2019-10-01", "01/10/2019 10:00:00"):
        assert not re.match(TIME_PATTERN, bad)


# ---------------------------------------------------------------------- property: the same contract as the stream
_values = {
    "event_time": st.sampled_from(["2019-10-01 00:00:04 UTC", "2019-10-01T03:00:04+03:00", "2019-10-01T00:00:04Z",
                                   "2019-13-01 00:00:00 UTC", "2019-02-30 10:00:00 UTC", "", "yesterday",
                                   "2019-10-01 00:00:04 MSK"]) | st.integers() | st.none(),
    "product_id": st.integers(min_value=-(2**64), max_value=2**64) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3) | st.none() | st.booleans(),
    "category_id": st.integers(min_value=-(2**64), max_value=2**64) | st.none() | st.text(max_size=2),
    "category_code": st.none() | st.sampled_from(["", "electronics.smartphone", "a"]) | st.integers(),
    "brand": st.none() | st.text(max_size=5) | st.booleans(),
    "price": st.floats(min_value=-1e6, max_value=1e6, allow_nan=False) | st.integers(min_value=-10, max_value=10**6)
    | st.text(max_size=3) | st.none() | st.booleans(),
    "user_id": st.integers(min_value=-(2**64), max_value=2**64) | st.none() | st.floats(allow_nan=False),
    "user_session": st.text(max_size=6) | st.none() | st.integers(),
}
_events = st.fixed_dictionaries({"event_type": st.just("cart")}, optional=_values)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(_events)
def test_the_api_accepts_exactly_the_cart_adds_the_stream_accepts(body):
    raw = json.dumps(body).encode()
    landed = validate_batch([(raw, "t", 0, 0)]).valid.to_pylist()
    try:
        ev = BODY.validate_python(json.loads(raw))      # FastAPI parses bodies with the json module
    except ValidationError as e:
        assert not landed, f"the stream accepts what the API refuses: {e.errors()}"
        return
    assert landed, "the API accepts what the stream refuses"
    assert Event.from_mapping(ev.model_dump()).event_key == landed[0]["event_key"]


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                    max_leaves=10))
def test_any_json_either_validates_or_raises_a_validation_error(value):
    try:
        BODY.validate_python(value)
    except ValidationError:
        pass
