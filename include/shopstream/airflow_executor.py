"""Airflow's LocalExecutor with the task libraries imported before its workers fork.

With the ``fork`` start method (Linux, Python < 3.14, or ``[scheduler|core] mp_start_method = fork``), Airflow 3's
LocalExecutor forks its ``parallelism`` worker processes from the scheduler in ``start()``, and each worker
forks the task SDK supervisor's task process per task (``airflow.sdk.execution_time.supervisor``: a bare
``os.fork`` on Linux). A module the scheduler has imported before ``start()`` is therefore already in
``sys.modules`` of every task process, its pages shared copy-on-write. The data DAG's check tasks import
Great Expectations, which takes seconds (10 s idle, 12-24 s on a loaded machine): this executor imports
``SHOPSTREAM_AIRFLOW__PRELOAD_MODULES`` once, at scheduler start, instead.

The settings select it (``AIRFLOW__CORE__EXECUTOR`` is this class's module path) when that setting is not
empty. With another start method, workers and tasks re-import everything and a preload would only slow the
scheduler's start: it is skipped then.
"""

from __future__ import annotations

import importlib
import logging
import time
import warnings

from airflow.executors.local_executor import LocalExecutor

log = logging.getLogger(__name__)


def preload(modules: str) -> dict[str, float]:
    """Import each module of the comma-separated ``modules``; return the seconds each import took.

    A module that fails to import is logged and left out: the task that needs it imports it itself (and
    fails there, with its own error). Great Expectations' INFO lines and pyspark's pandas-version warning
    (GE imports pyspark) are quieted first, as the check tasks do.
    """
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


def preload_modules_setting() -> str:
    """``SHOPSTREAM_AIRFLOW__PRELOAD_MODULES``; empty (no preload) when the settings cannot be read."""
    from shopstream.settings import load_settings

    try:
        return load_settings().airflow.preload_modules
    except Exception as e:  # noqa: BLE001 - the tasks report bad settings; the scheduler must still schedule
        log.warning("no preload: the settings could not be read (%s: %s)", type(e).__name__, e)
        return ""


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor whose workers (and so every task process) start with the preloaded modules imported."""

    def start(self) -> None:
        """Preload (``fork`` start method only), then start the LocalExecutor, which forks the workers."""
        if self.is_mp_using_fork:
            took = preload(preload_modules_setting())
            log.info("preloaded for the task processes: %s",
                     ", ".join(f"{m} {s:.1f}s" for m, s in took.items()) or "nothing")
        else:
            log.info("no preload: the multiprocessing start method is not fork (workers would re-import)")
        super().start()
