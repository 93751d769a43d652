"""The cluster profile (`shopstream up --cluster`) on this machine, with its own private stack.

The data DAG runs through Airflow's CeleryExecutor (Redis broker, the Airflow database as result backend), every
task instance on a celery worker, with its Spark jobs on the profile's Spark standalone master: the master's JSON
API lists the Spark Connect server (the data DAG's long-lived Spark) with its executor on the worker, and the
server's REST API lists silver's and gold's jobs and the tasks that executor ran. Silver and gold rebuilt for
the same run with ``local[*]`` give the same checksums, so the cluster changes where the work runs, not what it
computes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from shopstream.airflow_api import AirflowClient
from shopstream.events.generator import generate
from shopstream.events.producer import produce
from shopstream.settings import Settings, environment
from shopstream.spark_session import submit_argv
from shopstream.stack.base import free_port
from shopstream.stack.supervisor import Stack
from tests.conftest import _test_env
from tests.e2e.test_pipeline import checksums

pytestmark = pytest.mark.integration

SERVICES = ["postgres", "s3", "broker", "redis", "spark", "spark-connect", "airflow"]
SPARK_APPS = ("shopstream-silver", "shopstream-gold")   # the spark-submit jobs (SHOPSTREAM_SPARK__MODE=submit)
CONNECT_APP = "shopstream-connect"                      # the long-lived Spark Connect server (mode connect)


@pytest.fixture(scope="module")
def cluster_settings() -> Iterator[Settings]:
    state_dir = Path(tempfile.mkdtemp(prefix="shopstream-cluster-test-"))
    state_dir.chmod(0o755)
    env = {**_test_env(state_dir), "SHOPSTREAM_CLUSTER__ENABLED": "true", "SHOPSTREAM_SPARK__MODE": "connect",
           "SHOPSTREAM_CLUSTER__SPARK_MASTER_PORT": str(free_port()),
           "SHOPSTREAM_CLUSTER__SPARK_UI_PORT": str(free_port())}
    try:
        with environment(env) as settings:
            yield settings
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(cluster_settings: Settings) -> Iterator[Stack]:
    stack = Stack(cluster_settings, only=SERVICES)
    try:
        stack.up()
        yield stack
    finally:
        Stack(cluster_settings).down()   # the whole stack, leftovers included


@pytest.fixture(scope="module")
def cluster_run(cluster: Stack, cluster_settings: Settings):
    """5,000 generated events through the data DAG on the cluster profile."""
    stream = generate(5_000, seed=16, days=1)
    produce(cluster_settings, stream.timed())
    result = AirflowClient(cluster_settings).run_dag("shopstream_data", timeout=1800)
    assert result.state == "success", result.tasks
    return result


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def test_the_profile_points_spark_at_its_own_master(cluster_settings: Settings):
    s = cluster_settings
    assert s.spark.master == f"spark://127.0.0.1:{s.cluster.spark_master_port}"
    assert json.loads(s.airflow_connections()["AIRFLOW_CONN_SHOPSTREAM_SPARK"])["host"] == s.spark.master
    assert s.export_env()["SHOPSTREAM_SPARK__MASTER"] == s.spark.master


def test_task_instances_run_on_celery_workers(cluster, cluster_run, cluster_settings: Settings):
    """Every task instance of the run went through Celery: its Celery task id is recorded with the queue and
    host, the result backend (the Airflow database) holds that task as SUCCESS, and a worker logged it."""
    s = cluster_settings
    assert s.airflow.executor == "CeleryExecutor"
    assert s.airflow_env()["AIRFLOW__CELERY__BROKER_URL"] == f"redis://127.0.0.1:{s.redis.port}/{s.airflow.celery_broker_db}"
    deadline = time.monotonic() + 120
    while True:   # a task reports success to Airflow a moment before its Celery task returns
        with psycopg.connect(s.postgres.dsn(s.postgres.airflow_db)) as conn:
            tis = conn.execute(
                "select task_id, external_executor_id, queue, hostname, state from task_instance "
                "where dag_id = 'shopstream_data' and run_id = %s", (cluster_run.run_id,)).fetchall()
            done = {r[0]: r[1] for r in conn.execute("select task_id, status from celery_taskmeta")}
        ran = [t for t in tis if t[4] == "success"]
        if all(done.get(t[1]) == "SUCCESS" for t in ran) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert len(ran) >= 8, tis
    for task_id, celery_id, queue, hostname, _ in ran:
        assert celery_id and queue == "default" and hostname, (task_id, celery_id, queue, hostname)
        assert done.get(celery_id) == "SUCCESS", f"{task_id}: Celery task {celery_id} not SUCCESS in the backend"
    workers = [p for p in cluster.get("airflow").processes() if p.spec.name.startswith("airflow-celery-worker-")]
    assert len(workers) == s.airflow.celery_workers and all(p.pid for p in workers)
    logged = "".join(p.log_file.read_text(errors="replace") for p in workers)
    assert not [t[0] for t in ran if t[1] not in logged], "tasks no celery worker logged"


def test_data_dag_spark_jobs_run_on_the_standalone_master(cluster, cluster_run, cluster_settings: Settings):
    """The master's JSON API lists the Spark Connect server as its application with an executor on the
    worker; the server's own REST API shows silver's and gold's jobs (tagged by the transform tasks) and
    tasks run by that executor, not by the driver."""
    s = cluster_settings
    state = cluster.get("spark").master_state()
    apps = {a["name"]: a for a in state["completedapps"] + state["activeapps"]}
    assert CONNECT_APP in apps, sorted(apps)
    assert state["aliveworkers"] == s.cluster.spark_workers
    (worker,) = state["workers"]
    worker_state = _json(f"{worker['webuiaddress']}/json/")
    assert apps[CONNECT_APP]["id"] in {e["appid"] for e in worker_state["executors"]}, worker_state["executors"]

    api = f"{s.spark.ui_url}/api/v1/applications"
    (app,) = _json(api)
    jobs = _json(f"{api}/{app['id']}/jobs")
    tags = {t for j in jobs for t in j.get("jobTags", [])}
    for layer in ("silver", "gold"):
        assert any(f"shopstream-{layer}" in t for t in tags), f"no {layer} job in the Spark UI: {sorted(tags)[:20]}"
    executors = [e for e in _json(f"{api}/{app['id']}/executors") if e["id"] != "driver"]
    assert executors and sum(e["totalTasks"] for e in executors) > 0, executors


def test_gold_checksums_equal_a_local_run(cluster_run, cluster_settings: Settings):
    """Silver and gold rebuilt for the same run on ``local[*]`` leave every table as the cluster left it."""
    s = cluster_settings
    with psycopg.connect(s.postgres.dsn()) as conn:
        on_cluster = checksums(conn)
    assert int(on_cluster["gold.fact_events"].split(":")[0]) > 0
    env = {**s.service_env(), "SHOPSTREAM_SPARK__MASTER": "local[*]"}
    env.pop("SPARK_LOCAL_IP", None)
    local = s.model_copy(update={"spark": s.spark.model_copy(update={"master": "local[*]"})})
    for job in ("silver", "gold"):
        res = subprocess.run(submit_argv(local, job, "--run-id", cluster_run.run_id), env=env,
                             capture_output=True, text=True, timeout=1200)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    with psycopg.connect(s.postgres.dsn()) as conn:
        assert checksums(conn) == on_cluster
