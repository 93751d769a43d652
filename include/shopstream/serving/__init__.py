"""Online serving of the purchase-intent model: online features in Redis, the API, model lifecycle.

Modules:

- :mod:`~shopstream.serving.feature_store`: the Redis state layout, applying validated events with
  :func:`shopstream.features.update`, and :func:`~shopstream.serving.feature_store.features_for_event`
  (:func:`shopstream.features.features_for` on the state read back).
- :mod:`~shopstream.serving.consumer`: the consumer of the raw topic that keeps that state (``shopstream features``).
- :mod:`~shopstream.serving.model`: ``models:/<name>@champion`` loaded, polled and swapped without a restart,
  and the micro-batching predictor.
- :mod:`~shopstream.serving.app`: the FastAPI service (``shopstream serve``): /predict, /health, /ready, /metrics.
- :mod:`~shopstream.serving.demo`: a sample prediction for the demo summary.
- :mod:`~shopstream.serving.testing`: small registered models for tests and benchmarks, through the training code.

See docs/serving.md.
"""
