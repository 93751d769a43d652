"""Training: will this cart-add become a purchase? Nightly, and whenever the gold feature table is updated.

`check_champion` scores the current champion on the newest labelled rows (degradation check) and decides
whether to retrain: always when forced or without a champion, when the champion degraded, or when it is
older than `SHOPSTREAM_TRAINING__REFRESH_HOURS`; otherwise the run stops there (the downstream tasks are
skipped), so hourly feature updates do not retrain hourly. Then `extract` (time split + data check; on a
fresh stack whose `ml.cart_features` holds no rows yet it skips the run with that reason, and no MLflow run
is made) ->
`tune` (Ray Tune; local Ray, or a Ray job with deferred polling when `SHOPSTREAM_RAY__ADDRESS` is set) ->
`train` (final model, test metrics, MLflow model + registered version) -> `gate` (thresholds and no
regression vs `champion`; moves the alias or fails with the reasons).

Wiring only: the work is in `shopstream.training.pipeline`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from shopstream.assets import CHAMPION_MODEL, GOLD_FEATURES
from shopstream.settings import get_settings
from shopstream.training.operators import TuneOperator

SETTINGS = get_settings()
DEFAULT_ARGS = {"owner": "shopstream", "retries": 1, "retry_delay": timedelta(seconds=30)}


@dag(
    dag_id="shopstream_training",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(SETTINGS.training.schedule, timezone="UTC"), assets=GOLD_FEATURES
    ) if SETTINGS.training.schedule else [GOLD_FEATURES],
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(seconds=SETTINGS.training.tune_timeout_s + 3600),
    render_template_as_native_obj=True,
    tags=["shopstream", "training"],
    description="Purchase-intent model: Ray Tune over XGBoost, MLflow registry, promotion gate (skips without data)",
    doc_md=__doc__,
    params={
        "trials": Param(SETTINGS.training.trials, type="integer", minimum=1, maximum=500, title="Trials",
                        description="Ray Tune trials (OptunaSearch samples, ASHA stops weak ones early)."),
        "window_days": Param(SETTINGS.training.window_days, type="integer", minimum=1, title="Training window (days)",
                             description="Days of ml.cart_features, back from the newest row, to train, "
                                         "validate and test on (test = the most recent period)."),
        "force": Param(False, type="boolean", title="Retrain even if the champion is healthy",
                       description="Off: retrain only without a champion, when it degraded, or when it is older "
                                   "than SHOPSTREAM_TRAINING__REFRESH_HOURS."),
        "search_space": Param(None, type=["null", "string"], title="Search space file",
                              description="Path of another search space YAML (default: "
                                          "SHOPSTREAM_TRAINING__SEARCH_SPACE or the packaged one)."),
        "max_rounds": Param(None, type=["null", "integer"], minimum=1, title="Max boosting rounds",
                            description="Cap on boosting rounds per trial (default: the search space's)."),
    },
)
def shopstream_training():
    @task.short_circuit
    def check_champion(params: dict | None = None, ti=None) -> bool:
        from shopstream.training.pipeline import check_champion as run

        decision = run(get_settings(), force=bool(params["force"]))
        ti.xcom_push(key="decision", value=decision)
        return bool(decision["retrain"])

    @task
    def extract(params: dict | None = None, run_id: str | None = None, ti=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from shopstream.training.dataset import DataCheckError, NoTrainingData
        from shopstream.training.pipeline import extract as run

        decision = ti.xcom_pull(task_ids="check_champion", key="decision") or {}
        try:
            return run(get_settings(), run_id, params["window_days"], decision.get("reason", ""))
        except NoTrainingData as e:   # a fresh stack: skip this run (and the tasks after it), no MLflow run
            raise AirflowSkipException(str(e)) from None
        except DataCheckError as e:
            raise AirflowFailException(str(e)) from None

    @task
    def train(training: dict) -> dict:
        from shopstream.training.pipeline import train as run

        return run(get_settings(), training["run_id"])

    @task(outlets=[CHAMPION_MODEL])
    def gate(model: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from shopstream.training.gate import GateFailed
        from shopstream.training.pipeline import gate as run

        try:
            return run(get_settings(), model["version"])
        except GateFailed as e:
            raise AirflowFailException(str(e)) from None

    training = extract()
    tuned = TuneOperator(
        task_id="tune",
        training=training,
        trials="{{ params.trials }}",
        search_space="{{ params.search_space }}",
        max_rounds="{{ params.max_rounds }}",
        execution_timeout=timedelta(seconds=SETTINGS.training.tune_timeout_s + 600),
    )
    model = train(training)
    check_champion() >> training
    tuned >> model
    gate(model)


shopstream_training()
