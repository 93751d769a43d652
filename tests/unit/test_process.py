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


def test_children_never_inherit_another_stacks_client_pointers(tmp_path, monkeypatch):
    """A process that configured MLflow/boto for one stack (AWS_ENDPOINT_URL_S3 & co.) starts another stack's
    services: the broker (object_store reads AWS_*), the stack's services and one-shot commands get this
    stack's endpoint or none, never the inherited one."""
    from shopstream.settings import load_settings
    from shopstream.stack.broker import BrokerService

    elsewhere = "http://127.0.0.1:1/another-stack"
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"):
        monkeypatch.setenv(var, elsewhere)
    monkeypatch.setenv("SHOPSTREAM_S3__ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SHOPSTREAM_STATE_DIR", str(tmp_path))
    s = load_settings()

    broker = BrokerService(s).specs()[0].env
    assert broker["AWS_ENDPOINT"] == "http://127.0.0.1:9" and broker["AWS_ACCESS_KEY_ID"] == s.s3.access_key
    assert elsewhere not in broker.values()
    service = s.service_env()
    assert service["AWS_ENDPOINT_URL_S3"] == service["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9"
    assert elsewhere not in service.values()

    out = tmp_path / "env.txt"
    mp = ManagedProcess(ProcSpec("env", ["sh", "-c", f"env > {out}"]), tmp_path / "run", tmp_path / "logs")
    mp.start()
    deadline = time.time() + 10
    while not (out.exists() and out.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    assert "SHOPSTREAM_S3__ENDPOINT_URL" in out.read_text() and elsewhere not in out.read_text()
