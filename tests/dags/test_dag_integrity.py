"""DAG integrity: every DAG imports cleanly, cheaply, and carries owner, tags and retries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pyspark", "ray", "great_expectations", "xgboost", "mlflow", "sklearn", "torch")

PARSE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {
    "errors": {k: v[-2000:] for k, v in bag.import_errors.items()},
    "dags": {
        d.dag_id: {
            "file": d.fileloc,
            "tags": sorted(d.tags),
            "description": d.description,
            "tasks": {t.task_id: {"owner": t.owner, "retries": t.retries, "op": type(t).__name__} for t in d.tasks},
        }
        for d in bag.dags.values()
    },
    "heavy": sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[2].split(",")),
}
print("RESULT" + json.dumps(out))
"""


def parse(tmp_path_factory, **settings: str) -> dict:
    """The DAG folder as Airflow's DagBag parses it, with these extra environment variables."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **os.environ,
        **settings,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "PYTHONPATH": str(REPO / "include"),
    }
    res = subprocess.run(
        [sys.executable, "-c", PARSE, str(REPO / "dags"), ",".join(HEAVY)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT")]
    assert res.returncode == 0 and line, res.stderr[-3000:]
    return json.loads(line[-1][len("RESULT"):])


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    return parse(tmp_path_factory)


def test_no_import_errors(parsed):
    assert parsed["errors"] == {}


def test_every_dag_file_defines_a_dag(parsed):
    files = {Path(d["file"]).name for d in parsed["dags"].values()}
    expected = {p.name for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_")}
    assert expected <= files


def test_dags_have_owner_tags_retries(parsed):
    assert parsed["dags"], "no DAG was parsed"
    for dag_id, dag in parsed["dags"].items():
        assert "shopstream" in dag["tags"], dag_id
        assert dag["description"] and len(dag["description"]) <= 200, f"{dag_id}: the DAG list shows no description"
        for task_id, t in dag["tasks"].items():
            assert t["owner"] and t["owner"] != "airflow", f"{dag_id}.{task_id} has no owner"
            assert t["retries"] >= 1, f"{dag_id}.{task_id} has no retries"


def test_no_heavy_imports_at_parse_time(parsed):
    assert parsed["heavy"] == [], f"DAG files import heavy modules at parse time: {parsed['heavy']}"


def test_spark_tasks_follow_the_spark_mode_and_the_land_task_the_landing_setting(parsed, tmp_path_factory):
    default = parsed["dags"]["shopstream_data"]["tasks"]
    assert default["silver.transform_silver"]["op"] != "SparkSubmitOperator"   # connect: a client task
    assert "land" in default
    submit = parse(tmp_path_factory, SHOPSTREAM_SPARK__MODE="submit",
                   SHOPSTREAM_PIPELINE__LAND_IN_DAG="false")["dags"]["shopstream_data"]["tasks"]
    assert submit["silver.transform_silver"]["op"] == submit["gold.transform_gold"]["op"] == "SparkSubmitOperator"
    assert "land" not in submit and set(submit) == set(default) - {"land"}
