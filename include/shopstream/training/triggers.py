"""Deferrable polling of a Ray job: the Airflow task frees its worker slot while the job runs.

Lives in the installed library (not ``dags/``) because the triggerer does not put the DAGs folder on
``sys.path``. Polls the Ray Jobs REST API (``GET <address>/api/jobs/<submission_id>``) with httpx, so the
triggerer needs no Ray import; the cluster's token (``SHOPSTREAM_RAY__AUTH_TOKEN``) is read from the
settings in the triggerer, never stored with the trigger.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


class RayJobTrigger(BaseTrigger):
    """Fires once the Ray job reaches a terminal state (or cannot be found / reached)."""

    def __init__(self, address: str, job_id: str, poll_interval: float = 15.0, max_errors: int = 20) -> None:
        super().__init__()
        self.address = address.rstrip("/")
        self.job_id = job_id
        self.poll_interval = float(poll_interval)
        self.max_errors = int(max_errors)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "shopstream.training.triggers.RayJobTrigger",
            {"address": self.address, "job_id": self.job_id, "poll_interval": self.poll_interval,
             "max_errors": self.max_errors},
        )

    def _headers(self) -> dict[str, str]:
        from shopstream.settings import get_settings

        token = get_settings().ray.auth_token.get_secret_value()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import httpx

        url = f"{self.address}/api/jobs/{self.job_id}"
        errors = 0
        last_status = None
        async with httpx.AsyncClient(timeout=30.0, headers=self._headers()) as client:
            while True:
                try:
                    r = await client.get(url)
                    if r.status_code == 404:
                        yield TriggerEvent({"job_id": self.job_id, "status": "NOT_FOUND",
                                            "message": f"no Ray job {self.job_id} at {self.address}"})
                        return
                    r.raise_for_status()
                    info = r.json()
                except (httpx.HTTPError, ValueError) as e:
                    errors += 1
                    self.log.warning("polling Ray job %s failed (%d/%d): %s", self.job_id, errors,
                                     self.max_errors, e)
                    if errors >= self.max_errors:
                        yield TriggerEvent({"job_id": self.job_id, "status": "UNREACHABLE",
                                            "message": f"{url}: {type(e).__name__}: {e}"})
                        return
                    await asyncio.sleep(self.poll_interval)
                    continue
                errors = 0
                status = str(info.get("status", "")).upper()
                if status in TERMINAL:
                    yield TriggerEvent({"job_id": self.job_id, "status": status,
                                        "message": info.get("message") or ""})
                    return
                if status != last_status:
                    self.log.info("Ray job %s is %s", self.job_id, status)
                    last_status = status
                await asyncio.sleep(self.poll_interval)
