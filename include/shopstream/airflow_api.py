"""A small client for Airflow 3's REST API (``/api/v2``): log in, unpause, trigger, wait."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from shopstream.settings import Settings

TERMINAL = {"success", "failed"}


class AirflowApiError(RuntimeError):
    """The API answered with an error; the message carries the status and body."""


@dataclass
class DagRunResult:
    dag_id: str
    run_id: str
    state: str
    tasks: dict[str, str]
    url: str


class AirflowClient:
    """Talks to the api-server named in settings with the admin login from settings."""

    def __init__(self, settings: Settings, timeout: float = 30.0) -> None:
        self.base = settings.airflow.base_url
        self.ui = settings.airflow.ui_url   # links for a browser
        self._login = (settings.airflow.admin_user, settings.airflow.admin_password.get_secret_value())
        self._http = httpx.Client(base_url=self.base, timeout=timeout, trust_env=False)
        self._token: str | None = None

    def _auth(self) -> dict[str, str]:
        if self._token is None:
            r = self._http.post("/auth/token", json={"username": self._login[0], "password": self._login[1]})
            if r.status_code >= 300:
                raise AirflowApiError(f"login as {self._login[0]!r} failed: HTTP {r.status_code} {r.text[:300]}")
            self._token = r.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self._http.request(method, f"/api/v2{path}", headers=self._auth(), **kwargs)
        if r.status_code >= 300:
            raise AirflowApiError(f"{method} {path}: HTTP {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict:
        """Wait until the dag-processor has parsed ``dag_id``; raise with import errors if it never appears."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.request("GET", f"/dags/{dag_id}")
            except AirflowApiError:
                if time.monotonic() > deadline:
                    errors = self.request("GET", "/importErrors").get("import_errors", [])
                    detail = "; ".join(f"{e['filename']}: {e['stack_trace'][-300:]}" for e in errors)
                    raise AirflowApiError(
                        f"DAG {dag_id!r} did not appear within {timeout:.0f}s. Import errors: {detail or 'none'}"
                    ) from None
                time.sleep(2)

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """Trigger a run now; return its run_id."""
        body = {"logical_date": None, "conf": conf or {}}
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        tis = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {t["task_id"]: t["state"] for t in tis}

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 1800.0, on_poll=None) -> DagRunResult:
        """Poll a run until it succeeds or fails (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                run = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
                tasks = self.task_states(dag_id, run_id)
            except httpx.TimeoutException:   # a busy api-server (one worker on a loaded machine): poll again
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
                continue
            if on_poll:
                on_poll(run["state"], tasks)
            if run["state"] in TERMINAL or time.monotonic() > deadline:
                return DagRunResult(
                    dag_id, run_id, run["state"], tasks, f"{self.ui}/dags/{dag_id}/runs/{run_id}"
                )
            time.sleep(2)

    def latest_run(self, dag_id: str, run_type: str | None = None) -> dict | None:
        """The newest run of ``dag_id`` (of ``run_type``, e.g. ``asset_triggered``, when given), or None."""
        params: dict[str, Any] = {"order_by": "-run_after", "limit": 1}
        if run_type:
            params["run_type"] = [run_type]
        runs = self.request("GET", f"/dags/{dag_id}/dagRuns", params=params)["dag_runs"]
        return runs[0] if runs else None

    def wait_for_started_run(self, dag_id: str, timeout: float = 60.0, run_type: str | None = None) -> dict | None:
        """Wait for a queued or running run (one a schedule or an asset started); None if none comes in time."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.latest_run(dag_id, run_type)
            if run and run["state"] in ("queued", "running"):
                return run
            if time.monotonic() > deadline:
                return None
            time.sleep(2)

    def run_dag(self, dag_id: str, conf: dict | None = None, timeout: float = 1800.0, on_poll=None) -> DagRunResult:
        """Wait for the DAG to be parsed, unpause it, trigger it and wait for the result."""
        self.wait_for_dag(dag_id)
        self.unpause(dag_id)
        run_id = self.trigger(dag_id, conf)
        return self.wait_for_run(dag_id, run_id, timeout, on_poll)
