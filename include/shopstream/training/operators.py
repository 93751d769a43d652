"""The tune task: a local Ray inside the task, or a Ray job on the cluster with deferrable polling.

Importing this module is cheap (no Ray, XGBoost or MLflow): the DAG file imports it at parse time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator


def _opt_int(v: Any) -> int | None:
    return None if v in (None, "", "None") else int(v)


class TuneOperator(BaseOperator):
    """Ray Tune over XGBoost for a training run.

    ``SHOPSTREAM_RAY__ADDRESS`` empty: tunes in this task, sequentially below ``SHOPSTREAM_TRAINING__RAY_MIN_ROWS``
    training rows, else on the long-lived local Ray (:func:`shopstream.training.tune.tune_local`). Set: submits a Ray job to that Jobs
    API and defers to :class:`~shopstream.training.triggers.RayJobTrigger`, so no worker slot is held while
    the cluster works; the task resumes in :meth:`execute_complete` and reads the result from MLflow.

    :param training: the extract task's output (a dict with ``run_id``) or the training run id itself
    :param trials: number of trials (default: ``SHOPSTREAM_TRAINING__TRIALS``)
    :param search_space: path of a search space YAML (default: ``SHOPSTREAM_TRAINING__SEARCH_SPACE``)
    :param max_rounds: cap on boosting rounds per trial (default: the search space's ``max_rounds``)
    """

    template_fields = ("training", "trials", "search_space", "max_rounds")
    ui_color = "#d6eaf8"

    def __init__(self, *, training: Any, trials: Any = None, search_space: Any = None, max_rounds: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.training = training
        self.trials = trials
        self.search_space = search_space
        self.max_rounds = max_rounds

    def _run_id(self) -> str:
        return str(self.training["run_id"] if isinstance(self.training, dict) else self.training)

    def execute(self, context: Any) -> dict:
        from shopstream.settings import get_settings
        from shopstream.training import tune

        settings = get_settings()
        run_id = self._run_id()
        spec = tune.make_spec(settings, _opt_int(self.trials), self.search_space or None, _opt_int(self.max_rounds))
        if not settings.ray.address:
            self.log.info("tuning run %s in this task (sequentially or on the local Ray, see "
                          "SHOPSTREAM_TRAINING__RAY_MIN_ROWS): %d trials", run_id, spec.trials)
            return tune.tune_local(settings, run_id, spec)
        from shopstream.training.triggers import RayJobTrigger

        job_id = tune.submit_job(settings, run_id, spec)
        self.log.info("submitted Ray job %s to %s (%d trials); deferring", job_id, settings.ray.address, spec.trials)
        self.defer(
            trigger=RayJobTrigger(address=settings.ray.address, job_id=job_id,
                                  poll_interval=settings.ray.poll_interval_s),
            method_name="execute_complete",
            kwargs={"run_id": run_id},
            timeout=timedelta(seconds=spec.timeout_s + 600),
        )

    def execute_complete(self, context: Any, event: dict, run_id: str | None = None) -> dict:
        from shopstream.settings import get_settings
        from shopstream.training import tune

        settings = get_settings()
        run_id = run_id or self._run_id()   # `airflow dags test` resumes with the event only
        if event.get("status") != "SUCCEEDED":
            raise RuntimeError(
                f"Ray job {event.get('job_id')} ended {event.get('status')}: {event.get('message')}. "
                f"Its logs: `ray job logs {event.get('job_id')} --address {settings.ray.address}` or the Ray "
                f"dashboard at {settings.ray.address}"
            )
        return tune.read_best(settings, run_id)
