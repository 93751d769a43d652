"""Landing DAG: drain the raw topic into the lake once (``shopstream land --until-idle``), by hand.

For deployments without the long-running landing service; where the service runs, leave this paused.
Wiring only: the work lives in ``shopstream.landing``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

DEFAULT_ARGS = {"owner": "shopstream", "retries": 2, "retry_delay": timedelta(seconds=30)}


@dag(
    dag_id="shopstream_landing",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["shopstream", "stream"],
    description="By hand: drain the raw topic into the lake once (where no landing service runs)",
    doc_md=__doc__,
)
def shopstream_landing():
    @task
    def land_until_idle() -> dict:
        from shopstream.landing.service import LandingConfig, LandingService
        from shopstream.settings import get_settings

        settings = get_settings()
        svc = LandingService(settings, LandingConfig(idle_timeout_s=10.0))
        try:
            stats = svc.run(until_idle=True)
        finally:
            svc.close()
        print(stats.summary(settings))
        return {"messages": stats.messages, "valid": stats.valid, "rejected": stats.rejected}

    land_until_idle()


shopstream_landing()
