"""The embedded stack as a whole: start in dependency order, stop in reverse, report health."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shopstream.settings import Settings
from shopstream.stack.airflow_server import AirflowService
from shopstream.stack.base import Service
from shopstream.stack.broker import BrokerService
from shopstream.stack.mlflow_server import MlflowService
from shopstream.stack.postgres import PostgresService
from shopstream.stack.process import ManagedProcess, ProcSpec, stop_all
from shopstream.stack.ray_head import RayService
from shopstream.stack.redis_server import RedisService
from shopstream.stack.s3 import S3Service
from shopstream.stack.serving import ServingService
from shopstream.stack.spark_cluster import SparkClusterService
from shopstream.stack.spark_connect import SparkConnectService
from shopstream.stack.superset import SupersetService

SERVICE_ORDER: tuple[type[Service], ...] = (
    PostgresService,
    S3Service,
    BrokerService,
    RedisService,  # skipped when SHOPSTREAM_REDIS__ENABLED=false
    SparkClusterService,  # the cluster profile only (SHOPSTREAM_CLUSTER__ENABLED / `shopstream up --cluster`)
    MlflowService,
    RayService,  # the long-lived local Ray of tuning runs; skipped when SHOPSTREAM_RAY__EMBEDDED=false
    ServingService,  # in the stack once a champion exists; skipped when SHOPSTREAM_SERVING__ENABLED=false
    SparkConnectService,  # the data DAG's long-lived Spark; skipped when SHOPSTREAM_SPARK__MODE=submit
    AirflowService,
    SupersetService,  # skipped when SHOPSTREAM_SUPERSET__ENABLED=false
)


@dataclass
class ServiceStatus:
    name: str
    state: str  # "healthy", "unhealthy", "stopped"
    address: str
    pids: list[int]
    memory_bytes: int  # PSS of the process trees (RSS where PSS is unreadable)
    problem: str | None
    details: str


class Stack:
    """The embedded services of one state directory."""

    def __init__(self, settings: Settings, only: list[str] | None = None) -> None:
        self.settings = settings
        self.services = [
            cls(settings) for cls in SERVICE_ORDER
            if getattr(cls, "is_enabled", lambda _s: True)(settings)
        ]
        if only:
            unknown = set(only) - {s.name for s in self.services}
            if unknown:
                raise ValueError(f"unknown service(s) {sorted(unknown)}; known: {self.names()}")
            self.services = [s for s in self.services if s.name in only]
        self.only = bool(only)

    def names(self) -> list[str]:
        return [s.name for s in self.services]

    def get(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(f"unknown service {name!r}; known: {self.names()}")

    def up(self, on_start: Callable[[str], None] | None = None) -> None:
        """Start every service (already healthy ones are left alone), in dependency order."""
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        for svc in self.services:
            if on_start:
                on_start(svc.name)
            svc.start()

    def down(self, on_stop: Callable[[str, bool], None] | None = None) -> None:
        """Stop every process the stack started, in reverse order."""
        for svc in reversed(self.services):
            stopped = svc.stop()
            if on_stop:
                on_stop(svc.name, stopped)
        if not self.only:
            self._stop_leftovers(on_stop)

    def _stop_leftovers(self, on_stop: Callable[[str, bool], None] | None) -> None:
        """Stop processes with a PID file that no enabled service claims (e.g. the cluster profile's, when the
        stack was started with ``--cluster`` and is stopped without it)."""
        run_dir = self.settings.state_dir / "run"
        known = {p.pid_file for svc in self.services for p in svc.processes()}
        left = [ManagedProcess(ProcSpec(f.stem, []), run_dir, self.settings.state_dir / "logs")
                for f in sorted(run_dir.glob("*.pid")) if f not in known]
        if left and stop_all(left) and on_stop:
            on_stop(", ".join(m.spec.name for m in left), True)

    def status(self) -> list[ServiceStatus]:
        out = []
        for svc in self.services:
            procs = svc.processes()
            pids = [p.pid for p in procs if p.pid]
            if not pids:
                out.append(ServiceStatus(svc.name, "stopped", svc.address(), [], 0, None, ""))
                continue
            problem = svc.check()
            if len(pids) < len(procs):
                missing = [p.spec.name for p in procs if not p.pid]
                problem = f"not running: {', '.join(missing)}" + (f"; {problem}" if problem else "")
            state = "healthy" if problem is None else "unhealthy"
            details = svc.details() if problem is None else ""
            out.append(ServiceStatus(svc.name, state, svc.address(), pids, svc.memory(), problem, details))
        return out

    def all_pids(self) -> set[int]:
        """Every PID of the stack right now, children included."""
        pids: set[int] = set()
        for svc in self.services:
            for p in svc.processes():
                pids.update(proc.pid for proc in p.tree())
        return pids
