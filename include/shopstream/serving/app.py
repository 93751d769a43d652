"""The purchase-intent API (``shopstream serve``): FastAPI on uvicorn.

- ``POST /predict``: one cart-add event, or ``{"events": [...]}``; online features from Redis, the champion's
  probability, the decision at its threshold, the version that answered and the features used.
- ``GET /health``: liveness (the process answers).
- ``GET /ready``: 200 when a model is loaded and Redis answers, else 503; lists problems either way (a
  champion that failed to load while the previous one keeps serving is a problem, not unreadiness).
- ``GET /model``: the model being served.
- ``GET /metrics``: Prometheus text format.
- ``GET /docs`` (Swagger UI) and ``/redoc``: the API's documentation from packaged assets (works offline).

With ``SHOPSTREAM_SERVING__API_KEY`` set, ``/predict`` and ``/model`` answer 401 without that key in the
``X-API-Key`` header; health, readiness, metrics and the docs stay open.

Model lifecycle: :class:`~shopstream.serving.model.ModelManager`. Lookups and predictions: one task on the
event loop batches the Redis reads and model calls of concurrent requests
(:class:`~shopstream.serving.scoring.Scorer`).
"""


import asyncio
import hmac
import logging
import math
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shopstream.serving.docs import add_docs
from shopstream.serving.feature_store import Event, Keys, connect_async
from shopstream.serving.metrics import MetricsMiddleware, ServingMetrics
from shopstream.serving.model import ModelManager, limit_threads
from shopstream.serving.schemas import (
    EXAMPLE_EVENT,
    BatchPrediction,
    ErrorOut,
    Health,
    ModelInfo,
    Prediction,
    Readiness,
    predict_request,
)
from shopstream.serving.scoring import FeatureStoreUnavailable, NoModel, Scorer
from shopstream.settings import Settings

log = logging.getLogger("shopstream.serving")

DESCRIPTION = """\
Will this cart-add become a purchase? The shop asks at cart-add time with the cart-add event; the service
looks up the session's and user's online features (kept in Redis by `shopstream features` from the event
stream, with the same feature code as the gold table), scores them with the registered model's `champion`
version and answers with the probability, the decision at the model's threshold, the version that answered
and the features it used. A session or user without online state is scored as a fresh one (and counted as a
feature-store miss in /metrics).
"""


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


API_KEY_HEADER = "X-API-Key"
# the request bodies Swagger UI's "Try it out" starts from (and ReDoc shows)
PREDICT_EXAMPLES = {
    "one cart-add": {"summary": "One cart-add event", "value": EXAMPLE_EVENT},
    "a batch": {"summary": "A batch of cart-adds, answered in order", "value": {"events": [
        EXAMPLE_EVENT, {**EXAMPLE_EVENT, "event_time": "2019-10-01 12:03:41 UTC", "product_id": 1005115,
                        "brand": "apple", "price": 975.57}]}},
}


def api_key_dependencies(settings: Settings) -> list:
    """``[Depends(check)]`` when ``SHOPSTREAM_SERVING__API_KEY`` is set (a 401 without it), else ``[]``."""
    expected = settings.serving.api_key.get_secret_value()
    if not expected:
        return []
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                          description="the key in SHOPSTREAM_SERVING__API_KEY")

    async def check(key: str | None = Security(header)) -> None:
        if not key or not hmac.compare_digest(key.encode(), expected.encode()):
            raise HTTPException(401, f"missing or wrong API key: send it in the {API_KEY_HEADER} header",
                                headers={"WWW-Authenticate": API_KEY_HEADER})

    return [Depends(check)]


class ServiceUnavailable(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def create_app(settings: Settings, *, manager: ModelManager | None = None, redis_client=None,
               poll: bool = True) -> FastAPI:
    """The API for these settings. ``manager`` (default: the champion of the registered model) is refreshed at
    start-up and polled in the background unless ``poll`` is false."""
    limit_threads()
    metrics = ServingMetrics()

    def on_change(model, problem) -> None:
        if model is not None:
            metrics.model_version.set(float(model.version) if model.version.isdigit() else 0)
            metrics.model.info({"name": model.name, "version": model.version, "threshold": f"{model.threshold:.6g}"})
        metrics.model_problem.set(1 if problem else 0)

    mgr = manager or ModelManager(settings)
    mgr.on_change = on_change
    mgr.on_reload = lambda result: metrics.reloads.labels(result).inc()
    keys = Keys(settings.redis.key_prefix)
    body_type = predict_request(settings.serving.max_batch)[1]
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["redis"] = redis_client or connect_async(settings, socket_timeout=5, socket_connect_timeout=2)
        await asyncio.to_thread(mgr.refresh)
        if mgr.current is not None:
            on_change(mgr.current, mgr.problem)
        if poll:
            mgr.start()
        state["scorer"] = Scorer(mgr, state["redis"], keys, on_round=metrics.batch_rows.observe)
        state["scorer"].start()
        try:
            yield
        finally:
            mgr.stop()
            await state["scorer"].close()
            if redis_client is None:
                await state["redis"].aclose()

    app = FastAPI(
        title="shopstream purchase-intent API", version="1", description=DESCRIPTION, lifespan=lifespan,
        openapi_tags=[{"name": "predictions", "description": "purchase probability of cart-adds"},
                      {"name": "operations", "description": "health, readiness, model, metrics"}],
        docs_url=None, redoc_url=None,   # add_docs serves them from packaged assets (no CDN)
    )
    add_docs(app)
    protected = api_key_dependencies(settings)
    unauthorized = {401: {"model": ErrorOut, "description": f"missing or wrong {API_KEY_HEADER}"}} if protected else {}
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.metrics = metrics
    app.state.manager = mgr

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422, with values JSON cannot carry (NaN, Infinity from lenient parsing) shown as text
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(ServiceUnavailable)
    async def _unavailable(request: Request, exc: ServiceUnavailable) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=503)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.post(
        "/predict", tags=["predictions"], response_model=Prediction | BatchPrediction,
        summary="Purchase probability of one cart-add, or of a batch", dependencies=protected,
        responses={**unauthorized,
                   503: {"model": ErrorOut, "description": "no model loaded yet, or the feature store is down"}},
    )
    async def predict(body: Annotated[body_type, Body(openapi_examples=PREDICT_EXAMPLES)]) -> Any:  # type: ignore[valid-type]
        """One cart-add event gives one prediction; `{"events": [...]}` gives `{"predictions": [...]}` in order."""
        batch = hasattr(body, "events")
        items = body.events if batch else [body]
        events = [Event.from_mapping(e.model_dump()) for e in items]
        try:
            scored = await state["scorer"].score(events)
        except NoModel as e:
            raise ServiceUnavailable(f"no model to answer with: {e}") from None
        except FeatureStoreUnavailable as e:
            raise ServiceUnavailable(f"feature store unavailable: {e}") from None
        model, lookups, proba = scored.model, scored.lookups, scored.probabilities
        for lk in lookups:
            metrics.sources.labels(lk.source).inc()
            if not lk.session_found:
                metrics.misses.labels("session").inc()
            if not lk.user_found:
                metrics.misses.labels("user").inc()
        metrics.predictions.labels(model.version).inc(len(lookups))
        ref = {"name": model.name, "version": model.version}
        out = [{
            "event_key": lk.event.event_key, "user_session": lk.event.user_session,
            "product_id": lk.event.product_id, "probability": p, "decision": p >= model.threshold,
            "threshold": model.threshold, "model_version": model.version, "model": ref, "features": lk.features,
            "feature_source": lk.source, "session_found": lk.session_found, "user_found": lk.user_found,
        } for lk, p in zip(lookups, proba, strict=True)]
        return {"predictions": out} if batch else out[0]

    @app.get("/health", tags=["operations"], response_model=Health, summary="Liveness")
    async def health() -> Any:
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], response_model=Readiness, summary="Readiness",
             responses={503: {"model": Readiness, "description": "no model loaded, or Redis does not answer"}})
    async def ready() -> Any:
        try:
            redis_state = "ok" if await asyncio.wait_for(state["redis"].ping(), 3) else "PING failed"
        except Exception as e:  # noqa: BLE001
            redis_state = f"{type(e).__name__}: {e}"[:200]
        model = mgr.current
        problems = []
        if model is None:
            problems.append(mgr.problem or "no model loaded yet")
        elif mgr.problem:
            problems.append(mgr.problem)
        if redis_state != "ok":
            problems.append(f"Redis at {settings.redis.host}:{settings.redis.port}: {redis_state}")
        ok = model is not None and redis_state == "ok"
        body = {"ready": ok, "model": model.describe() if model else None, "redis": redis_state,
                "problems": problems}
        return body if ok else JSONResponse(Readiness(**body).model_dump(), status_code=503)

    @app.get("/model", tags=["operations"], response_model=ModelInfo, summary="The model being served",
             dependencies=protected,
             responses={**unauthorized, 503: {"model": ErrorOut, "description": "no model loaded yet"}})
    async def model_info() -> Any:
        if mgr.current is None:
            raise ServiceUnavailable(mgr.problem or "no model loaded yet")
        return mgr.current.describe()

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition format"}})
    async def prom() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(settings: Settings, host: str | None = None, port: int | None = None, access_log: bool = False) -> None:
    """Run the API with uvicorn until SIGTERM/SIGINT (graceful: in-flight requests finish)."""
    import sys

    import uvicorn

    limit_threads()
    # with the pyfunc path, the loop and the pyfunc's worker thread share the GIL: hand it over often, or the
    # worker waits the default 5 ms at each of the many GIL releases inside pandas and xgboost
    sys.setswitchinterval(0.0005)
    app = create_app(settings)
    uvicorn.run(app, host=host or settings.serving.host, port=port or settings.serving.port,
                access_log=access_log, log_level="info", timeout_graceful_shutdown=10)
