"""Start, track and stop background processes by PID file.

A process is started in its own session (so its children share one process group), its output goes to
``<state>/logs/<name>.log`` and its PID and start time to ``<state>/run/<name>.pid``. Stopping sends
SIGTERM to the group and to every descendant still known, then SIGKILL after a grace period, so nothing
the stack started is left behind.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from shopstream.settings import inherited_env


@dataclass
class ProcSpec:
    """What to run for one process of a service."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None  # run as this OS user (only when started by root)
    stop_signal: int = signal.SIGTERM


class ManagedProcess:
    """One background process of the stack, tracked through its PID file."""

    def __init__(self, spec: ProcSpec, run_dir: Path, log_dir: Path) -> None:
        self.spec = spec
        self.pid_file = run_dir / f"{spec.name}.pid"
        self.log_file = log_dir / f"{spec.name}.log"

    # ----------------------------------------------------------------- state
    def _record(self) -> dict | None:
        try:
            return json.loads(self.pid_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def process(self) -> psutil.Process | None:
        """The live process, or None (a stale PID file or a reused PID counts as not running)."""
        rec = self._record()
        if not rec:
            return None
        try:
            proc = psutil.Process(rec["pid"])
            if abs(proc.create_time() - rec["create_time"]) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError):
            return None

    @property
    def pid(self) -> int | None:
        proc = self.process()
        return proc.pid if proc else None

    def tree(self) -> list[psutil.Process]:
        """The process and all its descendants."""
        proc = self.process()
        if not proc:
            return []
        try:
            return [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def memory(self) -> int:
        """Memory of the whole process tree in bytes: the proportional set size (PSS: a page shared by N
        processes counts 1/N to each, so workers forked from one parent are not counted N times), or the
        resident set size where PSS cannot be read."""
        total = 0
        for p in self.tree():
            try:
                try:
                    total += p.memory_full_info().pss
                except (AttributeError, psutil.AccessDenied):
                    total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    # ----------------------------------------------------------------- control
    def start(self) -> int:
        """Start the process in the background; return its PID."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict = {}
        if self.spec.user and os.geteuid() == 0:
            pw = pwd.getpwnam(self.spec.user)
            kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        with open(self.log_file, "ab") as log:
            log.write(f"\n--- start {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(self.spec.argv)}\n".encode())
            log.flush()
            popen = subprocess.Popen(  # noqa: S603 - argv is built by the stack, not from user input
                list(self.spec.argv),
                env=self.spec.env or inherited_env(),
                cwd=self.spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                **kwargs,
            )
        create_time = psutil.Process(popen.pid).create_time()
        self.pid_file.write_text(
            json.dumps({"pid": popen.pid, "create_time": create_time, "argv": list(self.spec.argv)})
        )
        return popen.pid

    def signal(self) -> list[psutil.Process]:
        """Send the stop signal to the process group and every descendant; return them."""
        procs = self.tree()
        if not procs:
            return []
        try:
            os.killpg(procs[0].pid, self.spec.stop_signal)
        except (ProcessLookupError, PermissionError):
            pass
        for p in procs:
            try:
                p.send_signal(self.spec.stop_signal)
            except psutil.NoSuchProcess:
                pass
        return procs

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the process and its descendants; True if something was running."""
        return stop_all([self], timeout)

    def tail(self, lines: int = 40) -> str:
        """The last lines of the log."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 64 * 1024))
                data = f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(data.splitlines()[-lines:])


def stop_all(managed: Sequence[ManagedProcess], timeout: float = 20.0) -> bool:
    """Signal all processes at once, wait up to ``timeout``, then SIGKILL what is left (descendants too)."""
    signalled = [(m, m.signal()) for m in managed]
    procs = [p for _, group in signalled for p in group]
    if not procs:
        for m in managed:
            m.pid_file.unlink(missing_ok=True)
        return False
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    late = [c for _, group in signalled if group for c in _children_safe(group[0]) if c not in alive]
    for p in alive + late:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive + late, timeout=5)
    for m in managed:
        m.pid_file.unlink(missing_ok=True)
    return True


def _children_safe(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def run_checked(
    argv: Sequence[str], *, env: dict[str, str] | None = None, user: str | None = None, log: Path | None = None,
    timeout: float = 300,
) -> None:
    """Run a one-shot setup command (as ``user`` when root); raise with its output if it fails."""
    kwargs: dict = {}
    if user and os.geteuid() == 0:
        pw = pwd.getpwnam(user)
        kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    res = subprocess.run(  # noqa: S603
        list(argv), env=inherited_env() if env is None else env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, **kwargs
    )
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(f"\n--- {' '.join(argv)}\n{res.stdout}{res.stderr}")
    if res.returncode != 0:
        out = (res.stdout + res.stderr).strip().splitlines()[-25:]
        raise RuntimeError(f"`{' '.join(argv)}` failed with exit code {res.returncode}:\n" + "\n".join(out))
