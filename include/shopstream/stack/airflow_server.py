"""Embedded Airflow 3: api-server, scheduler, dag-processor and triggerer as separate processes.

LocalExecutor (``shopstream.airflow_executor``'s, which imports Great Expectations once before it forks its
workers, so the check tasks start with it) with a parallelism that fits the machine, metadata in
PostgreSQL, the SimpleAuthManager admin login taken from settings (a development login: the embedded stack
listens on loopback only; an exposed deployment is docker-compose, with the FAB auth manager). Every
process gets the environment rendered by the settings module, so tasks see the same ``SHOPSTREAM_*``
settings and ``AIRFLOW_CONN_*`` connections.

With ``SHOPSTREAM_AIRFLOW__EXECUTOR=CeleryExecutor`` (docker-compose, the cluster profile) tasks run on
``SHOPSTREAM_AIRFLOW__CELERY_WORKERS`` ``airflow celery worker`` processes instead, with the broker and result
backend the settings render (Redis, the Airflow database); each is healthy once Celery reports it ready.

Log servers: the scheduler and the triggerer would start Airflow's log servers on all interfaces (their host
is hard-coded), so they run with ``--skip-serve-logs`` and the same log server app runs under uvicorn on the
Airflow host (loopback) instead; task instances record that host (:func:`loopback_hostname`), which is where
the api-server fetches the logs of running and deferred tasks from.
"""

from __future__ import annotations

import json
import urllib.request

from shopstream.stack.base import Service, venv_bin
from shopstream.stack.process import ProcSpec, run_checked

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
SERVE_LOGS_ELSEWHERE = ("scheduler", "triggerer")   # their log servers run as the processes below
LOG_SERVER_APP = "airflow.utils.serve_logs.log_server:get_app"


def _bind_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "localhost") else host


def loopback_hostname() -> str:
    """``[core] hostname_callable`` of the embedded stack: the address its log servers listen on."""
    from shopstream.settings import get_settings

    return _bind_host(get_settings().airflow.host)


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
        a = self.settings.airflow
        env = {**self.settings.service_env(),
               "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.loopback_hostname"}
        airflow = venv_bin("airflow")
        specs = [ProcSpec(f"airflow-{c}", [airflow, c, *(["--skip-serve-logs"] if c in SERVE_LOGS_ELSEWHERE else [])],
                          env=env) for c in COMPONENTS]
        if a.executor == "CeleryExecutor":
            # logs are served by the worker-logs process below (same log folder, same loopback host)
            specs += [ProcSpec(f"airflow-celery-worker-{i}", [
                airflow, "celery", "worker", "--skip-serve-logs", "--celery-hostname", f"worker-{i}@%h"], env=env)
                for i in range(1, a.celery_workers + 1)]
        for name, port in (("worker-logs", a.worker_log_port), ("trigger-logs", a.trigger_log_port)):
            specs.append(ProcSpec(f"airflow-{name}", [
                venv_bin("uvicorn"), LOG_SERVER_APP, "--factory", "--host", _bind_host(a.host), "--port", str(port),
                "--no-access-log", "--log-level", "warning"], env=env))
        return specs

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
        if bad:
            return ", ".join(bad)
        return self._celery_workers_ready()

    def _celery_workers_ready(self) -> str | None:
        for p in self.processes():
            if p.spec.name.startswith("airflow-celery-worker-"):
                text = p.log_file.read_text(errors="replace") if p.log_file.exists() else ""
                if " ready." not in text[text.rfind("\n--- start"):]:
                    return f"{p.spec.name}: Celery has not reported ready yet ({p.log_file})"
        return None

    def details(self) -> str:
        a = self.settings.airflow
        return f"login {a.admin_user} / (SHOPSTREAM_AIRFLOW__ADMIN_PASSWORD); development login, loopback only"
