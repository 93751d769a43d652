"""Which local Ray a tuning run uses: the long-lived one of the embedded stack, or a private one.

Starting Ray costs 9-17 s on two cores, more than tuning small data takes. So the embedded stack runs one
Ray head for its whole life (:class:`shopstream.stack.ray_head.RayService`, ``SHOPSTREAM_RAY__EMBEDDED``,
GCS on ``SHOPSTREAM_RAY__PORT``) and every tuning run only connects to it (about a second) and disconnects
afterwards. Without a running head (the stack's Ray disabled, a bare ``python`` process) a private Ray is
started for the block and shut down after it, as before. (A Ray *cluster* is used through its Jobs API
instead: ``SHOPSTREAM_RAY__ADDRESS``, :func:`shopstream.training.tune.submit_job`.)
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shopstream.settings import Settings


def ray_temp_dir(settings: Settings) -> Path:
    """Short per-state-dir temp dir for a local Ray (its socket paths must stay under ~100 bytes)."""
    if settings.ray.temp_dir:
        return Path(settings.ray.temp_dir)
    digest = hashlib.sha1(str(settings.state_dir.resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"ray-{digest}"


def head_address(settings: Settings) -> str | None:
    """``host:port`` of the long-lived local Ray head when it is enabled and accepts connections, else None."""
    if not settings.ray.embedded:
        return None
    from shopstream.stack.base import port_in_use

    host = "127.0.0.1"
    return f"{host}:{settings.ray.port}" if port_in_use(host, settings.ray.port) else None


@dataclass
class RaySession:
    """How this block got its Ray: ``long-lived`` (connected to the stack's head), ``private`` (started for
    the block) or ``in-process`` (already initialised by the caller); ``startup_s`` is what that cost."""

    kind: str
    startup_s: float
    address: str | None = None


def _env() -> None:
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.pop("RAY_ADDRESS", None)


@contextmanager
def local_ray(settings: Settings, reuse: bool = True) -> Iterator[RaySession]:
    """Ray for the duration of the block: the long-lived head when one runs (and ``reuse``), else a private
    Ray (token auth off, no dashboard). Either way this process disconnects at the end; only a private Ray
    is shut down with it."""
    _env()
    import ray

    if ray.is_initialized():
        yield RaySession("in-process", 0.0)
        return
    t0 = time.monotonic()
    address = head_address(settings) if reuse else None
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        session = RaySession("long-lived", time.monotonic() - t0, address)
    else:
        temp = ray_temp_dir(settings)
        temp.mkdir(parents=True, exist_ok=True)
        ray.init(address="local", num_cpus=settings.ray.num_cpus, include_dashboard=False, _temp_dir=str(temp),
                 log_to_driver=False, configure_logging=False)   # "local": a new Ray, never a running one
        session = RaySession("private", time.monotonic() - t0)
    try:
        yield session
    finally:
        ray.shutdown()
