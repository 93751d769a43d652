"""Prometheus metrics of the serving API (one registry per app) and the ASGI middleware that records them."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
ROUTES = ("/predict", "/health", "/ready", "/metrics", "/model", "/openapi.json", "/docs")


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("shopstream_serving_requests", "HTTP requests", ["endpoint", "method", "status"],
                                registry=r)
        self.latency = Histogram("shopstream_serving_request_duration_seconds", "HTTP request latency",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("shopstream_serving_errors", "failed requests by kind (validation, unavailable, "
                              "server)", ["endpoint", "kind"], registry=r)
        self.predictions = Counter("shopstream_serving_predictions", "cart-adds scored", ["model_version"],
                                   registry=r)
        self.misses = Counter("shopstream_serving_feature_store_misses", "lookups without online state "
                              "(served with a fresh session's or new user's defaults)", ["kind"], registry=r)
        self.sources = Counter("shopstream_serving_feature_source", "where a cart-add's features came from",
                               ["source"], registry=r)
        self.model_version = Gauge("shopstream_serving_model_version", "registered version being served "
                                   "(0 = none)", registry=r)
        self.model = Info("shopstream_serving_model", "the model being served", registry=r)
        self.model_problem = Gauge("shopstream_serving_model_problem", "1 when the champion cannot be served "
                                   "as it stands (see /ready)", registry=r)
        self.reloads = Counter("shopstream_serving_model_reloads", "model loads by result", ["result"], registry=r)
        self.batch_rows = Histogram("shopstream_serving_model_batch_rows", "rows per model call (micro-batches)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096), registry=r)
        for kind in ("session", "user"):
            self.misses.labels(kind)
        for source in ("feature_log", "live_state"):
            self.sources.labels(source)
        for result in ("loaded", "failed"):
            self.reloads.labels(result)
        self.model_version.set(0)


class MetricsMiddleware:
    """Pure ASGI middleware: count requests, time them and count 5xx as server errors."""

    def __init__(self, app, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ROUTES else "other"
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            m = self.metrics
            code = status["code"]
            m.latency.labels(endpoint).observe(time.perf_counter() - t0)
            m.requests.labels(endpoint, scope.get("method", ""), str(code)).inc()
            if code >= 500 and code != 503:
                m.errors.labels(endpoint, "server").inc()
            elif code == 503:
                m.errors.labels(endpoint, "unavailable").inc()
            elif code == 422:
                m.errors.labels(endpoint, "validation").inc()
