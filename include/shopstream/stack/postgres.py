"""Embedded PostgreSQL: one server holding the warehouse, Airflow, MLflow and Superset databases."""

from __future__ import annotations

import os
import pwd
import signal
import stat
import tempfile
from pathlib import Path

import psycopg

from shopstream.settings import inherited_env
from shopstream.stack.base import Service, StackError
from shopstream.stack.process import ProcSpec, run_checked


class PostgresService(Service):
    name = "postgres"
    start_timeout = 30.0

    @property
    def pg(self):
        return self.settings.postgres

    @property
    def host(self) -> str:
        return self.pg.host

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "postgres" / "data"

    @property
    def socket_dir(self) -> Path:
        return self.state_dir / "postgres" / "sock"

    def _bin(self, name: str) -> str:
        path = Path(self.pg.bin_dir) / name
        if not path.exists():
            raise StackError(
                f"PostgreSQL server binary {path} not found. Install the server (`apt-get install "
                f"postgresql-15`, done by `make install` as root) or point SHOPSTREAM_POSTGRES__BIN_DIR "
                f"at the directory holding initdb and postgres."
            )
        return str(path)

    def _os_user(self) -> str | None:
        """The user the server runs as: PostgreSQL refuses root, so root delegates to a system user."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(self.pg.os_user)
        except KeyError:
            raise StackError(
                f"PostgreSQL cannot run as root and the user {self.pg.os_user!r} does not exist. Create it "
                f"(`useradd --system {self.pg.os_user}`) or set SHOPSTREAM_POSTGRES__OS_USER."
            ) from None
        return self.pg.os_user

    def ports(self) -> dict[int, str]:
        return {self.pg.port: "SHOPSTREAM_POSTGRES__PORT"}

    def address(self) -> str:
        return f"postgresql://{self.pg.host}:{self.pg.port}"

    def specs(self) -> list[ProcSpec]:
        argv = [
            self._bin("postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.pg.port),
            "-c", f"listen_addresses={self.pg.host}",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "max_connections=200",
            "-c", "shared_buffers=256MB",
            "-c", "fsync=on",
        ]
        # SIGINT = "fast" shutdown: active transactions are rolled back, data is safe.
        return [ProcSpec("postgres", argv, env=_pg_env(), user=self._os_user(), stop_signal=signal.SIGINT)]

    def prepare(self) -> None:
        user = self._os_user()
        root = self.state_dir / "postgres"
        root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if user:
            _check_traversable(root, user)
            pw = pwd.getpwnam(user)
            for d in (root, self.socket_dir):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        if (self.data_dir / "PG_VERSION").exists():
            return
        with tempfile.NamedTemporaryFile("w", dir=root, delete=False) as f:
            f.write(self.pg.password.get_secret_value() + "\n")
            pwfile = f.name
        try:
            if user:
                pw = pwd.getpwnam(user)
                os.chown(pwfile, pw.pw_uid, pw.pw_gid)
            run_checked(
                [
                    self._bin("initdb"), "-D", str(self.data_dir), "-U", self.pg.user,
                    f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C",
                ],
                env=_pg_env(), user=user, log=self.log_dir / "postgres-initdb.log", timeout=120,
            )
        finally:
            os.unlink(pwfile)

    def _connect(self, db: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.pg.dsn(db), connect_timeout=3, autocommit=True)

    def check(self) -> str | None:
        try:
            with self._connect() as conn:
                conn.execute("select 1")
            return None
        except psycopg.Error as e:
            return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__

    def post_start(self) -> None:
        with self._connect() as conn:
            existing = {r[0] for r in conn.execute("select datname from pg_database")}
            for db in (self.pg.warehouse_db, self.pg.airflow_db, self.pg.mlflow_db, self.pg.superset_db):
                if db not in existing:
                    conn.execute(f'create database "{db}"')

    def details(self) -> str:
        try:
            with self._connect() as conn:
                dbs = [r[0] for r in conn.execute("select datname from pg_database where not datistemplate")]
            return "databases: " + ", ".join(sorted(dbs))
        except psycopg.Error:
            return ""


def _pg_env() -> dict[str, str]:
    env = {k: v for k, v in inherited_env().items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _check_traversable(path: Path, user: str) -> None:
    """PostgreSQL runs as ``user``: every parent of its data dir must let others through."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            raise StackError(
                f"PostgreSQL runs as {user!r} but cannot enter {parent} (mode {stat.filemode(mode)}). "
                f"Choose a state directory under a world-traversable path with SHOPSTREAM_STATE_DIR, "
                f"or `chmod o+x {parent}`."
            )
