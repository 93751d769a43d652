"""A private, minimal embedded stack for a benchmark: its own temp dir and free ports, stopped at the end."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shopstream.settings import Settings, environment
from shopstream.stack.base import free_port
from shopstream.stack.supervisor import Stack


@contextmanager
def private_stack(services: tuple[str, ...] = ("postgres", "s3", "broker")) -> Iterator[Settings]:
    """Start ``services`` under a fresh state dir; yield settings pointing at them (also in os.environ)."""
    state = Path(tempfile.mkdtemp(prefix="shopstream-bench-"))
    state.chmod(0o755)
    env = {
        "SHOPSTREAM_STATE_DIR": str(state),
        "SHOPSTREAM_POSTGRES__PORT": str(free_port()),
        "SHOPSTREAM_S3__ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "SHOPSTREAM_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "SHOPSTREAM_SPARK__CONNECT_PORT": str(free_port()),
        "SHOPSTREAM_SPARK__UI_PORT": str(free_port()),
    }
    with environment(env) as settings:
        stack = Stack(settings, only=list(services))
        try:
            print(f"starting a private stack ({', '.join(services)}) in {state} ...", flush=True)
            stack.up()
            yield settings
        finally:
            stack.down()
            shutil.rmtree(state, ignore_errors=True)


def service_cpu(settings: Settings, services: tuple[str, ...] = ("postgres", "s3", "broker")) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each stack service, children included."""
    import psutil

    out: dict[str, float] = {}
    stack = Stack(settings, only=list(services))
    for name in services:
        total = 0.0
        for managed in stack.get(name).processes():
            for proc in managed.tree():
                try:
                    t = proc.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
        out[name] = total
    return out
