"""Airflow's LocalExecutor with the task libraries imported before its workers fork.

On Linux, Airflow 3's LocalExecutor forks its worker processes from the scheduler when it starts, and each
worker forks a fresh process per task (``airflow.sdk.execution_time.supervisor``). A module the scheduler has
imported before the workers fork is therefore already imported in every task process, shared copy-on-write.
The data DAG's check tasks import Great Expectations, which takes seconds (12-24 s measured on a loaded
machine): this executor imports ``SHOPSTREAM_AIRFLOW__PRELOAD_MODULES`` once, at scheduler start, instead.

Selected by the settings (``AIRFLOW__CORE__EXECUTOR``) when that setting is not empty. With another start
method than ``fork`` (``[core] mp_start_method``) workers re-import everything and preloading only costs
the scheduler's start-up: it is skipped then.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import time
import warnings

from airflow.executors.local_executor import LocalExecutor

log = logging.getLogger(__name__)


def preload(modules: str) -> dict[str, float]:
    """Import each comma-separated module; seconds per module. A module that fails to import is logged and
    skipped: the task that needs it imports it itself (and fails there, with its own error)."""
    # Great Expectations logs ~220 INFO lines while it imports, and pyspark (which it imports) warns about
    # the pandas version: neither belongs in the scheduler's log (the check tasks quiet them the same way)
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    took: dict[str, float] = {}
    for name in (m.strip() for m in modules.split(",")):
        if not name:
            continue
        t = time.monotonic()
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - a preload is an optimisation, never a reason not to schedule
            log.warning("preload of %s failed (%s: %s); tasks import it themselves", name, type(e).__name__, e)
            continue
        took[name] = time.monotonic() - t
    return took


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor whose workers (and so every task process) start with the preloaded modules imported."""

    def start(self) -> None:
        if multiprocessing.get_start_method() == "fork":
            from shopstream.settings import get_settings

            took = preload(get_settings().airflow.preload_modules)
            log.info("preloaded for the task processes: %s",
                     ", ".join(f"{m} {s:.1f}s" for m, s in took.items()) or "nothing")
        super().start()
