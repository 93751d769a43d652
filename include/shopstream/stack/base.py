"""The shape every embedded service shares, and the small network helpers they use."""

from __future__ import annotations

import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from shopstream.settings import Settings
from shopstream.stack.process import ManagedProcess, ProcSpec, stop_all


class StackError(RuntimeError):
    """The embedded stack cannot start or stop; the message says what to do."""


def port_in_use(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], str | None], timeout: float, interval: float = 0.5) -> str | None:
    """Call ``check`` until it returns None (healthy) or the timeout passes; return the last problem."""
    deadline = time.monotonic() + timeout
    problem = check()
    while problem is not None and time.monotonic() < deadline:
        time.sleep(interval)
        problem = check()
    return problem


def venv_bin(name: str) -> str:
    """Path of an executable installed in this Python environment (falls back to PATH)."""
    candidate = Path(sys.prefix) / "bin" / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise StackError(f"`{name}` is not installed in {sys.prefix}; run `make install`.")
    return found


class Service:
    """An embedded service: one or more processes, a health check, and setup before/after start."""

    name: str = ""
    start_timeout: float = 60.0
    stop_timeout: float = 20.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir
        self.run_dir = self.state_dir / "run"
        self.log_dir = self.state_dir / "logs"

    # ----------------------------------------------------------------- to implement
    def specs(self) -> list[ProcSpec]:
        """The processes this service runs."""
        raise NotImplementedError

    def ports(self) -> dict[int, str]:
        """Ports the service binds, each with the setting that chooses it."""
        return {}

    def check(self) -> str | None:
        """None when healthy, otherwise what is wrong."""
        raise NotImplementedError

    def address(self) -> str:
        return ""

    def prepare(self) -> None:
        """One-time setup before the processes start (init a data dir, write config)."""

    def post_start(self) -> None:
        """Setup once healthy (databases, buckets, topics)."""

    def details(self) -> str:
        """Extra status text (for example consumer lag)."""
        return ""

    # ----------------------------------------------------------------- shared behaviour
    @property
    def host(self) -> str:
        return "127.0.0.1"

    def processes(self) -> list[ManagedProcess]:
        return [ManagedProcess(s, self.run_dir, self.log_dir) for s in self.specs()]

    def running(self) -> list[ManagedProcess]:
        return [p for p in self.processes() if p.process()]

    def start(self) -> None:
        """Start the service unless it is already running and healthy; wait until it is healthy."""
        procs = self.processes()
        alive = [p for p in procs if p.process()]
        if len(alive) == len(procs) and self.check() is None:
            return
        for p in alive:  # half-started: restart cleanly
            p.stop()
        for port, setting in self.ports().items():
            if port_in_use(self.host, port):
                raise StackError(
                    f"{self.name}: port {port} on {self.host} is already in use by another process. "
                    f"Stop that process or choose another port with {setting}."
                )
        self.prepare()
        for p in procs:
            p.start()
        problem = wait_until(self._check_alive(procs), self.start_timeout)
        if problem is not None:
            tails = "\n".join(f"--- {p.log_file}\n{p.tail(25)}" for p in procs)
            for p in procs:
                p.stop()
            raise StackError(f"{self.name} did not become healthy in {self.start_timeout:.0f}s: {problem}\n{tails}")
        self.post_start()

    def _check_alive(self, procs: list[ManagedProcess]) -> Callable[[], str | None]:
        def check() -> str | None:
            dead = [p.spec.name for p in procs if not p.process()]
            if dead:
                # a dead process will not come back: fail fast with its log
                raise StackError(
                    f"{self.name}: process {', '.join(dead)} exited during start-up.\n"
                    + "\n".join(f"--- {p.log_file}\n{p.tail(30)}" for p in procs if p.spec.name in dead)
                )
            return self.check()

        return check

    def stop(self) -> bool:
        return stop_all(self.processes(), self.stop_timeout)

    def memory(self) -> int:
        """Memory of the service's process trees in bytes (PSS; see ``ManagedProcess.memory``)."""
        return sum(p.memory() for p in self.processes())
