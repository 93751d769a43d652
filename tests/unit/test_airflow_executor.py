"""The preloading LocalExecutor: preload() timings and skips, preload before the workers fork, Airflow loads it.

Airflow is imported in a child process with its own AIRFLOW_HOME (as the DAG integrity tests do), so this
session's logging and configuration stay Airflow-free.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, logging, sys, warnings
from unittest import mock

out = {}
from shopstream import airflow_executor as ax
from shopstream.settings import PRELOADING_EXECUTOR

# 1. preload(): seconds per module, a bad module logged and skipped, GE's logger quieted
records = []
handler = logging.Handler()
handler.emit = records.append
ax.log.addHandler(handler)
took = ax.preload(" preload_probe_ok, shopstream_no_such_module ,, json")
out["took"] = took
out["probe_imported"] = "preload_probe_ok" in sys.modules
out["warnings"] = [r.getMessage() for r in records if r.levelno == logging.WARNING]
out["ge_level"] = logging.getLogger("great_expectations").level

# 2. start(): the preload happens before LocalExecutor.start() forks the workers; not without fork
from airflow.executors.local_executor import LocalExecutor
seen = []
def fake_start(self):
    seen.append("preload_probe_late" in sys.modules)
with mock.patch.object(LocalExecutor, "start", fake_start), \
        mock.patch.object(ax, "preload_modules_setting", return_value="preload_probe_late"):
    ex = ax.PreloadingLocalExecutor(parallelism=1)
    ex.is_mp_using_fork = False
    ex.start()
    out["without_fork"] = seen[-1]
    ex.is_mp_using_fork = True
    ex.start()
    out["with_fork"] = seen[-1]

# 3. Airflow's executor loader takes the module path the settings render for AIRFLOW__CORE__EXECUTOR
from airflow.executors.executor_loader import ExecutorLoader
names = ExecutorLoader._get_executor_names(validate_teams=False)
cls, _ = ExecutorLoader.import_executor_cls(names[0])
out["loaded"] = f"{cls.__module__}.{cls.__name__}"
out["is_local"] = issubclass(cls, LocalExecutor)
out["rendered"] = PRELOADING_EXECUTOR
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    """Run PROBE in a child with a private AIRFLOW_HOME and two stand-in modules on its path."""
    home = tmp_path_factory.mktemp("airflow-home")
    mods = tmp_path_factory.mktemp("mods")
    (mods / "preload_probe_ok.py").write_text("")
    (mods / "preload_probe_late.py").write_text("")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SHOPSTREAM_", "AIRFLOW"))},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "shopstream.airflow_executor.PreloadingLocalExecutor",
        "PYTHONPATH": os.pathsep.join([str(mods), str(REPO / "include")]),
    }
    res = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=home, capture_output=True, text=True,
                         timeout=300)
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT")]
    assert res.returncode == 0 and line, res.stderr[-3000:]
    return json.loads(line[-1][len("RESULT"):])


def test_preload_times_each_module_and_skips_a_bad_one(probe):
    assert sorted(probe["took"]) == ["json", "preload_probe_ok"]
    assert all(isinstance(s, float) and s >= 0 for s in probe["took"].values())
    assert probe["probe_imported"]
    assert len(probe["warnings"]) == 1 and "shopstream_no_such_module" in probe["warnings"][0]
    assert probe["ge_level"] == 30   # logging.WARNING: GE's ~220 INFO lines stay out of the scheduler's log


def test_start_preloads_before_the_workers_fork_and_only_with_fork(probe):
    assert probe["with_fork"] is True      # imported when LocalExecutor.start() (which forks) ran
    assert probe["without_fork"] is False  # spawn/forkserver workers would re-import: no preload


def test_airflow_loads_the_executor_the_settings_render(probe):
    assert probe["loaded"] == probe["rendered"] == "shopstream.airflow_executor.PreloadingLocalExecutor"
    assert probe["is_local"]
