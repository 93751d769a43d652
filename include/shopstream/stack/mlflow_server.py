"""Embedded MLflow tracking server: PostgreSQL backend store, artifacts proxied to the S3 endpoint."""

from __future__ import annotations

import urllib.request

from shopstream.stack.base import Service, venv_bin
from shopstream.stack.process import ProcSpec


class MlflowService(Service):
    name = "mlflow"
    start_timeout = 120.0

    @property
    def host(self) -> str:
        return self.settings.mlflow.host

    def ports(self) -> dict[int, str]:
        return {self.settings.mlflow.port: "SHOPSTREAM_MLFLOW__PORT"}

    def address(self) -> str:
        return self.settings.mlflow.uri

    def specs(self) -> list[ProcSpec]:
        s = self.settings
        argv = [
            venv_bin("mlflow"), "server",
            "--backend-store-uri", s.postgres.url(s.postgres.mlflow_db),
            "--artifacts-destination", f"s3://{s.s3.mlflow_bucket}/artifacts",
            "--host", s.mlflow.host,
            "--port", str(s.mlflow.port),
            "--workers", "1",
        ]
        env = s.service_env()
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        return [ProcSpec("mlflow", argv, env=env)]

    def check(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.address()}/health", timeout=2) as r:
                return None if r.status == 200 else f"HTTP {r.status}"
        except Exception as e:  # noqa: BLE001
            return f"{type(e).__name__}: {e}"[:200]
