"""Request and response models of the serving API (they are its OpenAPI schema).

A request event has the fields of the event contract (:mod:`shopstream.events.schema`), typed as strictly as
:func:`~shopstream.events.validation.validate_batch` types them: ids are JSON integers within int64 (``"12"``
and ``12.0`` are refused), ``price`` a finite JSON number >= 0, ``event_time`` the Kaggle form or ISO-8601
with ``Z``/an offset. ``event_type`` may be left out; if given it must be ``cart`` (predictions are for
cart-adds). Unknown fields are ignored, as on the stream. A bad field is a 422 whose ``loc`` names it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, create_model, field_validator

from shopstream.events.schema import INT64_MAX, INT64_MIN, parse_event_time
from shopstream.features import CATEGORICAL, FEATURE_COLUMNS

Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
# the shape of the accepted event_time forms, for the OpenAPI document (validation parses the value itself)
TIME_PATTERN = (r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2} UTC|[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2}))$")

EXAMPLE_EVENT = {
    "event_time": "2019-10-01 12:00:07 UTC",
    "event_type": "cart",
    "product_id": 1004856,
    "category_id": 2053013555631882655,
    "category_code": "electronics.smartphone",
    "brand": "samsung",
    "price": 130.76,
    "user_id": 543272936,
    "user_session": "8187d148-3c41-46d4-b0c0-9c08cd9dc564",
}


class CartEvent(BaseModel):
    """A cart-add event (the event contract's fields)."""

    model_config = ConfigDict(strict=True, extra="ignore", json_schema_extra={"examples": [EXAMPLE_EVENT]})

    event_time: str = Field(
        description="event time: 'YYYY-MM-DD HH:MM:SS UTC' or ISO-8601 with Z or an offset (a real date)",
        json_schema_extra={"pattern": TIME_PATTERN})
    event_type: Literal["cart"] = Field("cart", description="must be 'cart' (predictions are for cart-adds)")
    product_id: Int64 = Field(description="product id (int64)")
    category_id: Int64 = Field(description="category id (int64)")
    category_code: str | None = Field(None, description="dotted category, e.g. electronics.smartphone; '' = none")
    brand: str | None = Field(None, description="brand; '' = none")
    price: float = Field(ge=0, allow_inf_nan=False, description="price, >= 0")
    user_id: Int64 = Field(description="user id (int64)")
    user_session: str = Field(min_length=1, description="session id (non-empty)")

    @field_validator("event_time")
    @classmethod
    def _time(cls, v: str) -> str:
        if parse_event_time(v) is None:
            raise ValueError("not 'YYYY-MM-DD HH:MM:SS UTC' or ISO-8601 with Z or an offset")
        return v


def _kind(v: Any) -> str:
    return "batch" if isinstance(v, dict) and "events" in v else "event"


def predict_request(max_batch: int):
    """The /predict body type: one cart-add, or ``{"events": [...]}`` of 1..``max_batch`` cart-adds."""
    batch = create_model(
        "PredictBatch",
        __config__=ConfigDict(strict=True, extra="forbid",
                              json_schema_extra={"examples": [{"events": [EXAMPLE_EVENT]}]}),
        __doc__="Several cart-adds, answered in order.",
        events=(list[CartEvent], Field(min_length=1, max_length=max_batch,
                                       description=f"1 to {max_batch} cart-add events")),
    )
    return batch, Annotated[
        Annotated[CartEvent, Tag("event")] | Annotated[batch, Tag("batch")],
        Discriminator(_kind),
    ]


_FEATURE_DOC = {
    "category_l1": "first level of category_code",
    "category_l2": "second level of category_code",
    "brand": "brand",
    "price": "price of the product added",
    "hour": "UTC hour of the cart-add (0-23)",
    "weekday": "ISO weekday of the cart-add (1 = Monday)",
    "session_events_before": "events of the session before the cart-add",
    "session_views_before": "views in the session before the cart-add",
    "session_carts_before": "cart-adds in the session before this one",
    "session_distinct_products": "distinct products the session touched before",
    "session_duration_s": "seconds from the session's first event to the cart-add",
    "product_views_in_session": "views of this product in the session before",
    "user_prior_sessions": "the user's other sessions before",
    "user_prior_carts": "the user's cart-adds in other sessions before",
    "user_prior_purchases": "the user's purchases in other sessions before",
}
_FLOATS = {"price", "session_duration_s"}


def _feature_type(name: str) -> Any:
    if name in CATEGORICAL:
        return str | None
    return float if name in _FLOATS else int


Features = create_model(
    "Features",
    __doc__="The model's input for this cart-add (shopstream.features.FEATURE_COLUMNS, as in ml.cart_features).",
    **{c: (_feature_type(c), Field(description=_FEATURE_DOC.get(c, c))) for c in FEATURE_COLUMNS},
)


class ModelRef(BaseModel):
    name: str = Field(description="registered model name")
    version: str = Field(description="registered model version that answered")


class Prediction(BaseModel):
    """The purchase-intent answer for one cart-add."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "event_key": "5f1c0d8e2b6a4c3d9e8f7a6b5c4d3e2f", "user_session": EXAMPLE_EVENT["user_session"],
        "product_id": 1004856, "probability": 0.41, "decision": True, "threshold": 0.35, "model_version": "3",
        "model": {"name": "shopstream-purchase-intent", "version": "3"}, "feature_source": "live_state",
        "session_found": True, "user_found": True, "features": {c: None for c in FEATURE_COLUMNS},
    }]})

    event_key: str = Field(description="the event's deterministic key (as landed)")
    user_session: str
    product_id: int
    probability: float = Field(ge=0, le=1, description="P(the session buys this product after the cart-add)")
    decision: bool = Field(description="probability >= threshold")
    threshold: float = Field(description="the model's decision threshold (chosen by training, used by the gate)")
    model_version: str = Field(description="registered model version that answered")
    model: ModelRef
    features: Features  # type: ignore[valid-type]
    feature_source: Literal["feature_log", "live_state"] = Field(
        description="feature_log: the feature-store consumer had applied this cart-add and recorded its features "
        "just before; live_state: computed now from the session/user state (the cart-add not applied yet)")
    session_found: bool = Field(description="the session had online state (false: served as a fresh session)")
    user_found: bool = Field(description="the user had online state (false: served as a new user)")


class BatchPrediction(BaseModel):
    predictions: list[Prediction] = Field(description="one per event, in request order")


class ModelInfo(BaseModel):
    name: str = Field(description="registered model name")
    version: str = Field(description="registered version being served")
    threshold: float = Field(description="decision threshold logged with the model (on calibrated probabilities)")
    calibration: str = Field("none", description="how the model calibrates the booster's scores "
                             "(isotonic, platt, none), fitted on the validation split by training")
    run_id: str | None = Field(None, description="MLflow run that logged it")
    loaded_at: str = Field(description="when this process loaded it (UTC)")
    predict_path: Literal["booster", "pyfunc"] = Field(
        description="booster: the logged booster and category codes, verified at load to give exactly the "
        "pyfunc's probabilities; pyfunc: the pyfunc's predict")


class Readiness(BaseModel):
    ready: bool = Field(description="a model is loaded and Redis answers")
    model: ModelInfo | None = None
    redis: str = Field(description="ok, or what is wrong")
    problems: list[str] = Field(default_factory=list,
                                description="what is wrong, e.g. a champion that failed to load (the old one serves)")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ErrorOut(BaseModel):
    detail: str
