"""Embedded Redis (Debian's redis-server): the online feature store of the serving path.

One server on ``SHOPSTREAM_REDIS__HOST``/``__PORT`` with its data in ``<state>/redis``: append-only file on
(``--appendonly yes``, fsync every second), RDB snapshots off (``--save ''``), so the feature store survives a
restart of the stack. Healthy when it answers PING. In docker-compose the same settings point at the
``redis`` container.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from shopstream.settings import Settings
from shopstream.stack.base import Service, StackError
from shopstream.stack.process import ProcSpec

DEBIAN_BINARY = "/usr/bin/redis-server"


def redis_server_bin() -> str:
    """Path of redis-server (Debian package ``redis-server``)."""
    found = shutil.which("redis-server") or (DEBIAN_BINARY if Path(DEBIAN_BINARY).exists() else None)
    if not found:
        raise StackError(
            "redis-server is not installed: run `make system-deps` (as root it runs "
            "`apt-get install redis-server`), or turn the embedded Redis off with SHOPSTREAM_REDIS__ENABLED=false "
            "and point SHOPSTREAM_REDIS__HOST/__PORT at a running one."
        )
    return found


class RedisService(Service):
    name = "redis"
    start_timeout = 30.0

    @staticmethod
    def is_enabled(settings: Settings) -> bool:
        return settings.redis.enabled

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "redis"

    @property
    def host(self) -> str:
        return self.settings.redis.host

    def ports(self) -> dict[int, str]:
        return {self.settings.redis.port: "SHOPSTREAM_REDIS__PORT"}

    def address(self) -> str:
        r = self.settings.redis
        return f"redis://{r.host}:{r.port}/{r.db}"

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def specs(self) -> list[ProcSpec]:
        r = self.settings.redis
        argv = [
            redis_server_bin(),
            "--port", str(r.port),
            "--bind", r.host,
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--save", "",
            "--daemonize", "no",
            "--logfile", "",          # to stdout: the stack's log file
        ]
        if r.password.get_secret_value():   # from a file (0600), not the command line everyone can read
            argv.insert(1, str(self.auth_config()))
        return [ProcSpec("redis", argv)]

    def auth_config(self) -> Path:
        path = self.data_dir / "auth.conf"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(f'requirepass "{self.settings.redis.password.get_secret_value()}"\n')
        return path

    def check(self) -> str | None:
        import redis

        try:
            client = redis.Redis.from_url(self.settings.redis.url(), socket_timeout=2, socket_connect_timeout=2)
            try:
                return None if client.ping() else "PING did not answer PONG"
            finally:
                client.close()
        except Exception as e:  # noqa: BLE001
            return f"{type(e).__name__}: {e}"[:200]

    def details(self) -> str:
        import redis

        try:
            client = redis.Redis.from_url(self.settings.redis.url(), socket_timeout=2)
            try:
                info = client.info("memory")
                return f"{client.dbsize():,} keys, {info.get('used_memory_human', '?')} used"
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - details are informative only
            return ""
