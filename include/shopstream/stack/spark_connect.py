"""Embedded Spark Connect server: one long-lived Spark driver the data DAG's Spark tasks use.

``spark-submit --class org.apache.spark.sql.connect.service.SparkConnectServer`` with the server jar the
pyspark distribution ships, the PostgreSQL JDBC driver, UTC clocks and Python workers in this environment
(so ``shopstream.features`` is importable where gold's ``mapInArrow`` runs). The driver runs on
``SHOPSTREAM_SPARK__MASTER``: ``local[*]`` here, or a standalone master (``spark://host:7077``) whose
executors run on the same environment. Listens on ``SHOPSTREAM_SPARK__CONNECT_HOST``/``__PORT``; part of
the stack when ``SHOPSTREAM_SPARK__MODE=connect`` (with ``submit`` each task runs its own spark-submit).
"""

from __future__ import annotations

from pathlib import Path

from shopstream.settings import Settings
from shopstream.stack.base import Service, port_in_use
from shopstream.stack.process import ProcSpec


class SparkConnectService(Service):
    name = "spark-connect"
    start_timeout = 180.0      # a JVM and a SparkContext on a shared, busy machine

    @staticmethod
    def is_enabled(settings: Settings) -> bool:
        return settings.spark.mode == "connect"

    @property
    def host(self) -> str:
        return self.settings.spark.connect_host

    @property
    def work_dir(self) -> Path:
        return self.state_dir / "spark"

    def ports(self) -> dict[int, str]:
        s = self.settings.spark
        return {s.connect_port: "SHOPSTREAM_SPARK__CONNECT_PORT", s.ui_port: "SHOPSTREAM_SPARK__UI_PORT"}

    def address(self) -> str:
        return self.settings.spark.connect_url

    def prepare(self) -> None:
        (self.work_dir / "tmp").mkdir(parents=True, exist_ok=True)

    def specs(self) -> list[ProcSpec]:
        from shopstream.spark_session import connect_server_argv

        argv = connect_server_argv(self.settings, self.work_dir / "tmp")
        return [ProcSpec("spark-connect", argv, env=self.settings.service_env(), cwd=self.work_dir)]

    def check(self) -> str | None:
        s = self.settings.spark
        # the server binds its port once the SparkContext is up and the service is ready for sessions
        return None if port_in_use(s.connect_host, s.connect_port) else f"port {s.connect_port} not listening yet"

    def details(self) -> str:
        s = self.settings.spark
        return f"master {s.master}; Spark UI {s.ui_url}; the data DAG's Spark tasks share one session"
