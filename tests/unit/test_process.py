"""Process management: start in the background, track by PID file, stop the whole tree."""

from __future__ import annotations

import sys
import time

import psutil

from shopstream.stack.process import ManagedProcess, ProcSpec

SPAWNER = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"


def test_start_and_stop_whole_tree(tmp_path):
    mp = ManagedProcess(ProcSpec("spawner", [sys.executable, "-c", SPAWNER]), tmp_path / "run", tmp_path / "logs")
    pid = mp.start()
    deadline = time.time() + 10
    while len(mp.tree()) < 2 and time.time() < deadline:
        time.sleep(0.1)
    tree = [p.pid for p in mp.tree()]
    assert pid in tree and len(tree) == 2
    assert mp.stop(timeout=5) is True
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in tree)
    assert not mp.pid_file.exists()
    assert mp.stop() is False


def test_stale_pid_file_is_not_running(tmp_path):
    mp = ManagedProcess(ProcSpec("ghost", ["true"]), tmp_path / "run", tmp_path / "logs")
    mp.pid_file.parent.mkdir(parents=True)
    mp.pid_file.write_text('{"pid": 1, "create_time": 0, "argv": ["x"]}')  # PID 1 exists, but started earlier
    assert mp.process() is None


def test_log_tail(tmp_path):
    mp = ManagedProcess(ProcSpec("echo", ["sh", "-c", "echo hello; echo world"]), tmp_path / "run", tmp_path / "l")
    mp.start()
    time.sleep(0.5)
    assert mp.tail(2).splitlines()[-1] == "world"
