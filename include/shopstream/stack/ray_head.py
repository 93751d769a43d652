"""Embedded long-lived Ray head: started once with the stack, reused by every tuning run.

``ray start --head --block`` with ``SHOPSTREAM_RAY__NUM_CPUS`` CPUs, its GCS on ``SHOPSTREAM_RAY__PORT`` (Ray
registers the node under the machine's IP; clients reach it as ``127.0.0.1:<port>``), temp dir
``/tmp/ray-<hash of the state dir>`` (short socket paths), token auth off, no dashboard, no usage stats.
Tuning runs connect with ``ray.init(address=...)`` and disconnect afterwards
(:mod:`shopstream.training.ray_runtime`), so a run pays about a second instead of Ray's 9-17 s start.
``SHOPSTREAM_RAY__EMBEDDED=false`` (or a cluster in ``SHOPSTREAM_RAY__ADDRESS``) leaves it out. Healthy when the
GCS port accepts connections and ``ray start`` has reported the node started.
"""

from __future__ import annotations

import logging

from shopstream.settings import Settings
from shopstream.stack.base import Service, free_port, port_in_use, venv_bin
from shopstream.stack.process import ProcSpec

HOST = "127.0.0.1"
log = logging.getLogger(__name__)


class RayService(Service):
    name = "ray"
    start_timeout = 90.0

    @staticmethod
    def is_enabled(settings: Settings) -> bool:
        return settings.ray.embedded and not settings.ray.address

    def ports(self) -> dict[int, str]:
        return {self.settings.ray.port: "SHOPSTREAM_RAY__PORT"}

    def address(self) -> str:
        return f"{HOST}:{self.settings.ray.port}"

    def specs(self) -> list[ProcSpec]:
        from shopstream.training.ray_runtime import ray_temp_dir

        r = self.settings.ray
        temp = ray_temp_dir(self.settings)
        temp.mkdir(parents=True, exist_ok=True)
        argv = [
            venv_bin("ray"), "start", "--head", "--block",
            "--port", str(r.port),
            "--num-cpus", str(r.num_cpus), "--num-gpus", "0",
            "--temp-dir", str(temp),
            "--include-dashboard", "false", "--disable-usage-stats",
        ]
        # Fixed agent ports (free now): with port 0 the raylet waits for the agents to write their port files,
        # and gives up after ~15 s, which a loaded machine's agent start (20-30 s of imports) overruns.
        for option in ("--metrics-export-port", "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port",
                       "--runtime-env-agent-port"):
            argv += [option, str(free_port())]
        env = {**self.settings.service_env(), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_agent_register_timeout_ms": "120000", "RAY_raylet_start_wait_time_s": "120"}  # slow agents
        env.pop("RAY_ADDRESS", None)
        return [ProcSpec("ray", argv, env=env)]

    def prepare(self) -> None:
        """Warm the page cache with the agents' imports: the raylet waits only ~15 s (fixed in Ray) for its
        agents to report their ports, and a cold import of the dashboard agent alone takes longer on a busy
        machine."""
        import subprocess
        import sys

        subprocess.run([sys.executable, "-c", "import ray.dashboard.agent, ray.dashboard.utils"],  # noqa: S603
                       check=False, capture_output=True, timeout=300)

    def start(self) -> None:
        """Start like any service, but try up to three times (on a loaded machine the raylet may give up
        waiting, about 15 s and not configurable, for its agents to start), and never fail the stack: the
        long-lived head only saves start-up time, tuning runs start their own Ray (or tune sequentially)
        without it. A head that did not start is logged and shows as stopped in ``shopstream status``."""
        from shopstream.stack.base import StackError

        for attempt in range(1, 4):
            try:
                super().start()
                return
            except StackError as e:
                log.warning("the long-lived Ray head did not start (attempt %d of 3): %s", attempt, str(e)[:300])
        log.warning("running without the long-lived Ray head: each tuning run on Ray starts its own "
                    "(see %s)", self.log_dir)

    def check(self) -> str | None:
        if not port_in_use(HOST, self.settings.ray.port):
            return f"Ray GCS not listening on {self.address()}"
        procs = self.processes()
        log = procs[0].log_file if procs else None
        text = log.read_text(errors="replace") if log and log.exists() else ""
        if "Ray runtime started" not in text[text.rfind("\n--- start"):]:
            return "the Ray head has not finished starting (no 'Ray runtime started' in its log yet)"
        return None
