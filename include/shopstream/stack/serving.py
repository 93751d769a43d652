"""Embedded online serving: the feature-store consumer and the purchase-intent API, once a champion exists.

Two processes: ``shopstream features`` (the consumer of the raw topic that keeps the online features in
Redis) and ``shopstream serve`` (the API on ``SHOPSTREAM_SERVING__HOST``/``__PORT``). The service is part of
the stack once the registered model has a ``champion`` (an API without a model could only answer 503), or
while its processes run: before the first training run ``shopstream up``/``status``/``down`` leave it out,
afterwards ``shopstream up`` (or :func:`shopstream.serving.demo.sample`, which the demo calls) starts it.
``SHOPSTREAM_SERVING__ENABLED=false`` leaves it out of the stack always.
"""

from __future__ import annotations

import logging
import urllib.request

from shopstream.settings import Settings
from shopstream.stack.base import Service, venv_bin
from shopstream.stack.process import ProcSpec

log = logging.getLogger("shopstream.stack.serving")


def champion_exists(settings: Settings, timeout: float = 2.0) -> bool:
    """Whether the registered model has a ``champion`` alias (False when MLflow does not answer in time)."""
    import json
    from urllib.parse import urlencode

    from shopstream.serving.model import CHAMPION

    query = urlencode({"name": settings.mlflow.registered_model, "alias": CHAMPION})
    try:
        with urllib.request.urlopen(f"{settings.mlflow.uri}/api/2.0/mlflow/registered-models/alias?{query}",
                                    timeout=timeout) as r:
            return bool(json.loads(r.read()).get("model_version"))
    except Exception:  # noqa: BLE001 - 404 (no model or alias), or MLflow down
        return False


class ServingService(Service):
    name = "serving"
    start_timeout = 180.0      # the API loads the champion from MLflow before it answers

    @staticmethod
    def is_enabled(settings: Settings) -> bool:
        """In the stack when enabled and either running or a champion exists (a quick REST call, no retries)."""
        if not settings.serving.enabled:
            return False
        svc = ServingService(settings)
        return bool(svc.running()) or champion_exists(settings)

    @property
    def host(self) -> str:
        return self.settings.serving.host

    def ports(self) -> dict[int, str]:
        return {self.settings.serving.port: "SHOPSTREAM_SERVING__PORT"}

    def address(self) -> str:
        return f"{self.settings.serving.base_url}/docs"

    def specs(self) -> list[ProcSpec]:
        env = self.settings.service_env()
        env["OMP_NUM_THREADS"] = "1"
        shopstream = venv_bin("shopstream")
        return [ProcSpec("features", [shopstream, "features"], env=env),
                ProcSpec("serving", [shopstream, "serve"], env=env)]

    def champion(self) -> str | None:
        """The champion's version, or None (no model, no alias, or MLflow unreachable)."""
        from shopstream.serving.model import ModelManager

        try:
            return ModelManager(self.settings).champion_version()
        except Exception as e:  # noqa: BLE001
            log.warning("cannot read the champion alias: %s", e)
            return None

    def start(self) -> None:
        """Start both processes when a champion exists; otherwise leave them stopped (and say so in the log)."""
        if self.champion() is None:
            log.info("serving not started: %s has no champion yet (train one, then `shopstream up`)",
                     self.settings.mlflow.registered_model)
            return
        super().start()

    def check(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.settings.serving.base_url}/health", timeout=2) as r:
                return None if r.status == 200 else f"HTTP {r.status}"
        except Exception as e:  # noqa: BLE001
            return f"{type(e).__name__}: {e}"[:200]

    def details(self) -> str:
        import json

        try:
            with urllib.request.urlopen(f"{self.settings.serving.base_url}/ready", timeout=2) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        except Exception:  # noqa: BLE001 - details are informative only
            return ""
        model = body.get("model") or {}
        text = f"model {model.get('name')} v{model.get('version')}" if model else "no model"
        return "; ".join([text, *body.get("problems", [])])
