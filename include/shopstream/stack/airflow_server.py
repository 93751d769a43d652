"""Embedded Airflow 3: api-server, scheduler, dag-processor and triggerer as separate processes.

LocalExecutor with a parallelism that fits the machine, metadata in PostgreSQL, the SimpleAuthManager
admin login taken from settings. Every process gets the environment rendered by the settings module,
so tasks see the same ``SHOPSTREAM_*`` settings and ``AIRFLOW_CONN_*`` connections.
"""

from __future__ import annotations

import json
import urllib.request

from shopstream.stack.base import Service, venv_bin
from shopstream.stack.process import ProcSpec, run_checked

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


class AirflowService(Service):
    name = "airflow"
    start_timeout = 180.0

    @property
    def host(self) -> str:
        return self.settings.airflow.host

    def ports(self) -> dict[int, str]:
        a = self.settings.airflow
        return {
            a.port: "SHOPSTREAM_AIRFLOW__PORT",
            a.worker_log_port: "SHOPSTREAM_AIRFLOW__WORKER_LOG_PORT",
            a.trigger_log_port: "SHOPSTREAM_AIRFLOW__TRIGGER_LOG_PORT",
        }

    def address(self) -> str:
        return self.settings.airflow.base_url

    def specs(self) -> list[ProcSpec]:
        env = self.settings.service_env()
        airflow = venv_bin("airflow")
        return [ProcSpec(f"airflow-{c}", [airflow, c], env=env) for c in COMPONENTS]

    def prepare(self) -> None:
        s = self.settings
        home = s.airflow_home
        home.mkdir(parents=True, exist_ok=True)
        passwords = home / "simple_auth_manager_passwords.json"
        passwords.write_text(json.dumps({s.airflow.admin_user: s.airflow.admin_password.get_secret_value()}))
        passwords.chmod(0o600)
        run_checked(
            [venv_bin("airflow"), "db", "migrate"],
            env=s.service_env(), log=self.log_dir / "airflow-db-migrate.log", timeout=600,
        )

    def health(self) -> dict:
        with urllib.request.urlopen(f"{self.address()}/api/v2/monitor/health", timeout=3) as r:
            return json.load(r)

    def check(self) -> str | None:
        try:
            h = self.health()
        except Exception as e:  # noqa: BLE001
            return f"api-server: {type(e).__name__}: {e}"[:200]
        bad = [
            f"{part}={h.get(part, {}).get('status')}"
            for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
            if h.get(part, {}).get("status") != "healthy"
        ]
        return ", ".join(bad) if bad else None

    def details(self) -> str:
        a = self.settings.airflow
        return f"login {a.admin_user} / (SHOPSTREAM_AIRFLOW__ADMIN_PASSWORD)"
