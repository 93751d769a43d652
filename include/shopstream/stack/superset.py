"""Embedded Superset 6.1: its own virtualenv, metadata in PostgreSQL, dashboards imported at start.

Superset needs SQLAlchemy 1.4 and pandas 2.1, so it runs from ``.venv-superset`` (built by ``make install``
from ``requirements-superset.txt``), never imported by this process. The service:

- renders ``<state>/superset/superset_config.py`` (no secret in it: the process environment carries the
  ``SHOPSTREAM_POSTGRES__*`` settings and ``SUPERSET_SECRET_KEY``, generated once into
  ``<state>/superset/secret_key``), with in-process caches and rate limits (no Redis, no Celery);
- on the first start of a state dir (or after an upgrade of Superset, or a change of the admin login) runs
  ``superset db upgrade``, ``superset fab create-admin`` and ``superset init``, and records that in
  ``<state>/superset/initialized.json``;
- serves with gunicorn (one gthread worker) on ``SHOPSTREAM_SUPERSET__HOST``/``__PORT``;
- once healthy, imports the dashboards (:mod:`shopstream.dashboards.importer`), which also creates or
  updates the warehouse database connection.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import psycopg

from shopstream.settings import REPO_ROOT, Settings, inherited_env
from shopstream.stack.base import Service, StackError
from shopstream.stack.process import ProcSpec

CONFIG_TEMPLATE = '''\
"""Superset configuration of the embedded stack, rendered by shopstream.stack.superset (do not edit).

Secrets are not written here: the process environment carries SUPERSET_SECRET_KEY and the
SHOPSTREAM_POSTGRES__* settings. Caches and rate limits live in the process (one gunicorn worker).
"""

import os
from urllib.parse import quote

SECRET_KEY = os.environ["SUPERSET_SECRET_KEY"]

_pg_user = quote(os.environ["SHOPSTREAM_POSTGRES__USER"], safe="")
_pg_password = quote(os.environ["SHOPSTREAM_POSTGRES__PASSWORD"], safe="")
_pg_host = os.environ["SHOPSTREAM_POSTGRES__HOST"]
_pg_port = os.environ["SHOPSTREAM_POSTGRES__PORT"]
_pg_db = os.environ["SHOPSTREAM_POSTGRES__SUPERSET_DB"]
SQLALCHEMY_DATABASE_URI = f"postgresql+psycopg2://{_pg_user}:{_pg_password}@{_pg_host}:{_pg_port}/{_pg_db}"


def _simple_cache(prefix, timeout):
    return {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": timeout, "CACHE_KEY_PREFIX": prefix}


CACHE_CONFIG = _simple_cache("superset_meta_", 300)
DATA_CACHE_CONFIG = _simple_cache("superset_data_", 3600)
RATELIMIT_STORAGE_URI = "memory://"
RESULTS_BACKEND = None
FEATURE_FLAGS = {"GLOBAL_ASYNC_QUERIES": False, "ALERT_REPORTS": False}

# The dashboard importer posts with a CSRF token and a Referer; the login form needs the token too.
WTF_CSRF_ENABLED = True
WTF_CSRF_TIME_LIMIT = None

DATA_DIR = @DATA_DIR@
UPLOAD_FOLDER = @UPLOAD_DIR@
SUPERSET_WEBSERVER_PORT = @PORT@
SUPERSET_WEBSERVER_TIMEOUT = 120
ROW_LIMIT = 50_000
SQLLAB_CTAS_NO_LIMIT = True
'''


class SupersetService(Service):
    name = "superset"
    start_timeout = 240.0
    stop_timeout = 20.0

    @staticmethod
    def is_enabled(settings: Settings) -> bool:
        return settings.superset.enabled

    # ----------------------------------------------------------------- paths
    @property
    def home(self) -> Path:
        return self.state_dir / "superset"

    @property
    def config_path(self) -> Path:
        return self.home / "superset_config.py"

    @property
    def marker_path(self) -> Path:
        return self.home / "initialized.json"

    @property
    def venv(self) -> Path:
        v = self.settings.superset.venv
        return Path(v) if v else REPO_ROOT / ".venv-superset"

    def _bin(self, name: str) -> str:
        path = self.venv / "bin" / name
        if not path.exists():
            raise StackError(
                f"Superset's virtualenv lacks {path}. Run `make install` (it builds {self.venv} from "
                f"requirements-superset.txt), point SHOPSTREAM_SUPERSET__VENV at one, or turn Superset off "
                f"with SHOPSTREAM_SUPERSET__ENABLED=false."
            )
        return str(path)

    def version(self) -> str:
        """Installed apache-superset version in the Superset virtualenv ('' when unknown)."""
        for d in sorted(self.venv.glob("lib/python3*/site-packages/apache_superset-*.dist-info")):
            return d.name.removeprefix("apache_superset-").removesuffix(".dist-info")
        return ""

    # ----------------------------------------------------------------- Service
    @property
    def host(self) -> str:
        return self.settings.superset.host

    def ports(self) -> dict[int, str]:
        return {self.settings.superset.port: "SHOPSTREAM_SUPERSET__PORT"}

    def address(self) -> str:
        return self.settings.superset.base_url

    def env(self) -> dict[str, str]:
        """Environment of every Superset process: no trace of this venv, settings, config and secret."""
        env = {k: v for k, v in inherited_env().items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        env.update(self.settings.export_env())
        env.update({
            "PATH": f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
            "SUPERSET_CONFIG_PATH": str(self.config_path),
            "SUPERSET_HOME": str(self.home / "home"),
            "FLASK_APP": "superset.app:create_app()",
            "SUPERSET_SECRET_KEY": self._secret_key(),
            "PYTHONUNBUFFERED": "1",
            "NO_PROXY": "*",
        })
        return env

    def specs(self) -> list[ProcSpec]:
        s = self.settings.superset
        argv = [
            self._bin("gunicorn"),
            "--bind", f"{s.host}:{s.port}",
            "--workers", "1", "--worker-class", "gthread", "--threads", str(s.threads),
            "--timeout", "120",
            "--limit-request-line", "0", "--limit-request-field_size", "0",
            "superset.app:create_app()",
        ]
        return [ProcSpec("superset", argv, env=self.env(), cwd=self.home)]

    def prepare(self) -> None:
        self._bin("superset")
        self.home.mkdir(parents=True, exist_ok=True)
        for d in ("home", "uploads"):
            (self.home / d).mkdir(exist_ok=True)
        self.config_path.write_text(
            CONFIG_TEMPLATE.replace("@DATA_DIR@", repr(str(self.home / "home")))
            .replace("@UPLOAD_DIR@", repr(str(self.home / "uploads") + "/"))
            .replace("@PORT@", str(self.settings.superset.port))
        )
        self.initialise()

    def check(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.address()}/health", timeout=3) as r:
                body = r.read(64).decode(errors="replace").strip()
                return None if r.status == 200 and body == "OK" else f"HTTP {r.status}: {body}"
        except Exception as e:  # noqa: BLE001
            return f"{type(e).__name__}: {e}"[:200]

    def post_start(self) -> None:
        from shopstream.dashboards.importer import DashboardImportError, import_dashboards

        try:
            import_dashboards(self.settings)
        except DashboardImportError as e:
            raise StackError(f"superset: importing the dashboards failed: {e}") from None

    def details(self) -> str:
        s = self.settings.superset
        return f"login {s.admin_user} / (SHOPSTREAM_SUPERSET__ADMIN_PASSWORD)"

    # ----------------------------------------------------------------- first start
    def _secret_key(self) -> str:
        configured = self.settings.superset.secret_key.get_secret_value()
        if configured:
            return configured
        path = self.home / "secret_key"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48) + "\n")
        return path.read_text().strip()

    def _admin_fingerprint(self) -> str:
        s = self.settings.superset
        return hashlib.sha256(
            f"{s.admin_user}\0{s.admin_password.get_secret_value()}\0{s.admin_email}".encode()
        ).hexdigest()

    def _metadata_state(self) -> tuple[bool, bool]:
        """(schema present, admin user present) in the Superset metadata database."""
        pg = self.settings.postgres
        try:
            with psycopg.connect(pg.dsn(pg.superset_db), connect_timeout=5, autocommit=True) as conn:
                if conn.execute("select to_regclass('public.ab_user')").fetchone()[0] is None:
                    return False, False
                if conn.execute("select to_regclass('public.alembic_version')").fetchone()[0] is None:
                    return False, False
                n = conn.execute(
                    "select count(*) from ab_user where username = %s", (self.settings.superset.admin_user,)
                ).fetchone()[0]
                return True, n > 0
        except psycopg.Error as e:
            raise StackError(
                f"superset: cannot reach its metadata database {pg.superset_db!r} on {pg.host}:{pg.port} "
                f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}). "
                f"Start PostgreSQL first (`shopstream up postgres`)."
            ) from None

    def initialise(self) -> None:
        """db upgrade + create-admin + init, only when this state dir needs them (see the marker file)."""
        try:
            marker = json.loads(self.marker_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            marker = {}
        version = self.version()
        schema_ok, admin_ok = self._metadata_state()
        needs_schema = not schema_ok or marker.get("superset_version") != version
        needs_admin = not admin_ok or marker.get("admin") != self._admin_fingerprint()
        if not (needs_schema or needs_admin):
            return
        s = self.settings.superset
        pw = s.admin_password.get_secret_value()
        if needs_schema:
            self._superset("db", "upgrade")
        if needs_admin:
            _, admin_ok = self._metadata_state()
            if admin_ok:
                self._superset("fab", "reset-password", "--username", s.admin_user, "--password", pw)
            else:
                self._superset(
                    "fab", "create-admin", "--username", s.admin_user, "--password", pw, "--email", s.admin_email,
                    "--firstname", "Superset", "--lastname", "Admin",
                )
        if needs_schema:
            self._superset("init")
        self.marker_path.write_text(json.dumps({"superset_version": version, "admin": self._admin_fingerprint()}))

    def _superset(self, *args: str, timeout: float = 900) -> None:
        """Run one ``superset`` CLI command; log it (password hidden) and raise with its output on failure."""
        argv: Sequence[str] = [self._bin("superset"), *args]
        t0 = time.monotonic()
        res = subprocess.run(  # noqa: S603 - argv is built here
            list(argv), env=self.env(), cwd=self.home, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        shown = " ".join("***" if i and argv[i - 1] == "--password" else a for i, a in enumerate(argv))
        out = res.stdout + res.stderr
        log = self.log_dir / "superset-init.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(f"\n--- {shown} (exit {res.returncode} after {time.monotonic() - t0:.1f}s)\n{out}")
        if res.returncode != 0:
            tail = "\n".join(out.strip().splitlines()[-25:])
            raise StackError(f"superset: `{shown}` failed with exit code {res.returncode} (log {log}):\n{tail}")
