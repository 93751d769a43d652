"""Training of the purchase-intent model: will this cart-add become a purchase in the same session?

Modules, in the order a run uses them:

- :mod:`~shopstream.training.dataset`: the feature contract of ``ml.cart_features``, the training window, the
  time-based train/valid/test split (sessions that cross a boundary are purged) and the data check.
- :mod:`~shopstream.training.tune`: Ray Tune (OptunaSearch + ASHA) over XGBoost; local Ray or a Ray job.
- :mod:`~shopstream.training.train`: the final model, its test metrics and plots, the MLflow model and version.
- :mod:`~shopstream.training.gate`: thresholds from a versioned YAML file and no regression against ``champion``.
- :mod:`~shopstream.training.degradation`: the champion scored on the newest labelled rows; retrain or not.
- :mod:`~shopstream.training.pipeline`: one function per DAG task (what ``dags/shopstream_training.py`` calls).
- :mod:`~shopstream.training.pyfunc_model`: the logged model (raw feature frame in, probability out).

Heavy libraries (ray, xgboost, mlflow, sklearn) are imported inside functions only, so DAG parsing stays cheap.
"""
