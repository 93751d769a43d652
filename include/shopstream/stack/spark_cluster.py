"""Cluster profile: a Spark standalone master and workers, from the pyspark distribution's ``spark-class``.

The same processes as docker-compose's spark-master and spark-worker (``org.apache.spark.deploy.master.Master``
and ``...worker.Worker``), on loopback: master RPC on ``SHOPSTREAM_CLUSTER__SPARK_MASTER_PORT``, its web UI and
JSON API on ``SHOPSTREAM_CLUSTER__SPARK_UI_PORT``, ``SHOPSTREAM_CLUSTER__SPARK_WORKERS`` workers with
``..._WORKER_CORES`` cores and ``..._WORKER_MEMORY`` each (their UIs on free ports, their scratch space under
``<state>/spark``). With the profile on, ``SHOPSTREAM_SPARK__MASTER`` defaults to this master, so the data
DAG's spark-submit tasks (the ``shopstream_spark`` connection) and their sessions run their executors here.
Healthy when the master is ALIVE and every worker has registered.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from shopstream.settings import Settings
from shopstream.stack.base import Service, StackError
from shopstream.stack.process import ProcSpec

HOST = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


class SparkClusterService(Service):
    name = "spark"
    start_timeout = 180.0   # two JVMs start at once on a busy machine

    @staticmethod
    def is_enabled(settings: Settings) -> bool:
        return settings.cluster.enabled and settings.spark.master == settings.cluster.spark_master_url

    def ports(self) -> dict[int, str]:
        c = self.settings.cluster
        return {c.spark_master_port: "SHOPSTREAM_CLUSTER__SPARK_MASTER_PORT",
                c.spark_ui_port: "SHOPSTREAM_CLUSTER__SPARK_UI_PORT"}

    def address(self) -> str:
        return self.settings.cluster.spark_master_url

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.settings.cluster.spark_ui_port}"

    def _spark_class(self, env: dict[str, str]) -> str:
        home = env.get("SPARK_HOME")
        script = Path(home) / "bin" / "spark-class" if home else None
        if not script or not script.exists():
            raise StackError("spark: spark-class not found (SPARK_HOME of the pyspark package); run `make install`.")
        return str(script)

    def specs(self) -> list[ProcSpec]:
        c = self.settings.cluster
        env = {**self.settings.service_env(), "SPARK_LOCAL_IP": HOST, "SPARK_DAEMON_MEMORY": "256m",
               "SPARK_NO_DAEMONIZE": "1"}
        spark_class = self._spark_class(env)
        specs = [ProcSpec("spark-master", [spark_class, MASTER_CLASS, "--host", HOST, "--port",
                                           str(c.spark_master_port), "--webui-port", str(c.spark_ui_port)], env=env)]
        for i in range(1, c.spark_workers + 1):
            work = self.state_dir / "spark" / f"worker-{i}"
            specs.append(ProcSpec(f"spark-worker-{i}", [
                spark_class, WORKER_CLASS, "--host", HOST, "--webui-port", "0",
                "--cores", str(c.spark_worker_cores), "--memory", c.spark_worker_memory,
                "--work-dir", str(work), c.spark_master_url], env=env))
        return specs

    def prepare(self) -> None:
        for i in range(1, self.settings.cluster.spark_workers + 1):
            (self.state_dir / "spark" / f"worker-{i}").mkdir(parents=True, exist_ok=True)

    def master_state(self) -> dict:
        """The master's JSON API (``/json/``): workers, cores, active and completed applications."""
        with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=3) as r:
            return json.load(r)

    def check(self) -> str | None:
        try:
            state = self.master_state()
        except Exception as e:  # noqa: BLE001
            return f"master JSON API at {self.ui_url}: {type(e).__name__}: {e}"[:200]
        want = self.settings.cluster.spark_workers
        if state.get("status") != "ALIVE":
            return f"master status {state.get('status')}"
        if state.get("aliveworkers", 0) < want:
            return f"{state.get('aliveworkers', 0)} of {want} workers registered"
        return None

    def details(self) -> str:
        try:
            state = self.master_state()
        except Exception:  # noqa: BLE001
            return ""
        return (f"{state.get('aliveworkers')} workers, {state.get('cores')} cores, "
                f"{len(state.get('activeapps', []))} running apps; UI {self.ui_url}")
