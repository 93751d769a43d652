"""Import the dashboards kept in ``assets/`` into Superset, idempotently, through its REST API.

The assets are Superset's own export format (``metadata.yaml`` with ``type: assets``, then
``databases/``, ``datasets/``, ``charts/``, ``dashboards/``), each object with a fixed UUID. They are
zipped under one root folder and posted to ``/api/v1/assets/import/``, which overwrites every object it
finds by UUID: a re-import updates charts, datasets and dashboards, never duplicates them.
(``superset import-dashboards`` only creates: later edits to charts and datasets would be ignored.)

The database file holds no credential and no address: its ``sqlalchemy_uri`` and name are rendered from
the settings at import time, and the password goes in the ``passwords`` form field.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml

from shopstream.settings import Settings

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
BUNDLE_ROOT = "shopstream_dashboards"
MASKED_PASSWORD = "XXXXXXXXXX"  # what Superset's own exports put in place of a password


class DashboardImportError(RuntimeError):
    """Superset refused the assets or could not be reached; the message says what it answered."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class Dashboard:
    title: str
    slug: str
    uuid: str


@dataclass
class ImportResult:
    seconds: float
    dashboards: list[Dashboard] = field(default_factory=list)
    charts: int = 0
    datasets: int = 0


# --------------------------------------------------------------------------- assets
def asset_files(assets_dir: Path = ASSETS_DIR) -> dict[str, dict[str, Any]]:
    """Every YAML file of the assets, by its path relative to the assets dir (``charts/x.yaml``)."""
    out = {}
    for path in sorted(assets_dir.rglob("*.yaml")):
        out[path.relative_to(assets_dir).as_posix()] = yaml.safe_load(path.read_text())
    if "metadata.yaml" not in out:
        raise DashboardImportError(f"{assets_dir}/metadata.yaml is missing (it must say `type: assets`)")
    return out


def warehouse_uri(settings: Settings, password: str = MASKED_PASSWORD) -> str:
    """SQLAlchemy URI of the warehouse as Superset connects to it (psycopg2 lives in Superset's venv)."""
    pg = settings.postgres
    return (
        f"postgresql+psycopg2://{quote(pg.user, safe='')}:{password}@{pg.host}:{pg.port}/"
        f"{quote(pg.warehouse_db, safe='')}"
    )


def build_bundle(settings: Settings, assets_dir: Path = ASSETS_DIR) -> tuple[bytes, dict[str, str]]:
    """The ZIP to post and the ``passwords`` map (database file -> password)."""
    files = asset_files(assets_dir)
    passwords: dict[str, str] = {}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, content in files.items():
            if rel.startswith("databases/"):
                content = dict(content)
                content["sqlalchemy_uri"] = warehouse_uri(settings)
                content["database_name"] = settings.superset.database_name
                passwords[rel] = settings.postgres.password.get_secret_value()
            zf.writestr(f"{BUNDLE_ROOT}/{rel}", yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
    return buf.getvalue(), passwords


def dashboards_in(assets_dir: Path = ASSETS_DIR) -> list[Dashboard]:
    """The dashboards the assets define, in file order."""
    return [
        Dashboard(c["dashboard_title"], c["slug"], str(c["uuid"]))
        for rel, c in asset_files(assets_dir).items() if rel.startswith("dashboards/")
    ]


# --------------------------------------------------------------------------- REST client
class SupersetClient:
    """A logged-in session on Superset's REST API (JWT bearer + CSRF token + Referer)."""

    def __init__(self, settings: Settings, timeout: float = 120.0) -> None:
        self.settings = settings
        self.base_url = settings.superset.base_url
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False,
                                 headers={"Referer": self.base_url + "/"})
        self._logged_in = False

    def __enter__(self) -> SupersetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def login(self) -> None:
        s = self.settings.superset
        try:
            r = self.http.post("/api/v1/security/login", json={
                "username": s.admin_user, "password": s.admin_password.get_secret_value(),
                "provider": "db", "refresh": False,
            })
        except httpx.HTTPError as e:
            raise DashboardImportError(f"cannot reach Superset at {self.base_url}: {e}. Is it running "
                                       f"(`shopstream status`)?", retryable=True) from None
        if r.status_code != 200:
            raise DashboardImportError(
                f"login to Superset at {self.base_url} as {s.admin_user!r} failed (HTTP {r.status_code}: "
                f"{r.text[:200]}); check SHOPSTREAM_SUPERSET__ADMIN_USER / __ADMIN_PASSWORD"
            )
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        r = self.http.get("/api/v1/security/csrf_token/")
        _raise_for(r, "GET /api/v1/security/csrf_token/")
        self.http.headers["X-CSRFToken"] = r.json()["result"]
        self._logged_in = True

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if not self._logged_in:
            self.login()
        return self.http.request(method, path, **kwargs)

    def get_json(self, path: str, **params: Any) -> Any:
        r = self.request("GET", path, params=params or None)
        _raise_for(r, f"GET {path}")
        return r.json()

    def list_all(self, resource: str, columns: list[str] | None = None) -> list[dict[str, Any]]:
        """Every object of ``chart``, ``dataset``, ``dashboard`` or ``database`` (all pages)."""
        out: list[dict[str, Any]] = []
        page = 0
        while True:
            q: dict[str, Any] = {"page": page, "page_size": 100}
            if columns:
                q["columns"] = columns
            body = self.get_json(f"/api/v1/{resource}/", q=_rison(q))
            out.extend(body["result"])
            if len(out) >= body["count"] or not body["result"]:
                return out
            page += 1

    def import_assets(self, bundle: bytes, passwords: dict[str, str]) -> None:
        r = self.request(
            "POST", "/api/v1/assets/import/",
            files={"bundle": (f"{BUNDLE_ROOT}.zip", bundle, "application/zip")},
            data={"passwords": json.dumps(passwords), "overwrite": "true"},
        )
        if r.status_code != 200:
            raise DashboardImportError(f"POST /api/v1/assets/import/ answered HTTP {r.status_code}: "
                                       f"{_error_text(r)}", retryable=r.status_code >= 500)


def _raise_for(r: httpx.Response, what: str) -> None:
    if r.status_code >= 400:
        raise DashboardImportError(f"{what} answered HTTP {r.status_code}: {_error_text(r)}",
                                   retryable=r.status_code >= 500)


def _error_text(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:1000]
    return json.dumps(body.get("errors") or body.get("message") or body)[:2000]


def _rison(obj: Any) -> str:
    """Encode a small dict/list/str/int as Rison (the ``q`` parameter of Superset's list endpoints)."""
    if isinstance(obj, dict):
        return "(" + ",".join(f"{k}:{_rison(v)}" for k, v in obj.items()) + ")"
    if isinstance(obj, list | tuple):
        return "!(" + ",".join(_rison(v) for v in obj) + ")"
    if isinstance(obj, bool):
        return "!t" if obj else "!f"
    if isinstance(obj, int | float):
        return str(obj)
    s = str(obj)
    if s and all(c.isalnum() or c in "-_./~" for c in s) and not s[0].isdigit() and s[0] != "-":
        return s
    return "'" + s.replace("!", "!!").replace("'", "!'") + "'"


# --------------------------------------------------------------------------- entry points
def import_dashboards(settings: Settings, assets_dir: Path = ASSETS_DIR, retries: int = 3) -> ImportResult:
    """Import (create or overwrite) every asset; return what the assets define."""
    t0 = time.monotonic()
    bundle, passwords = build_bundle(settings, assets_dir)
    files = asset_files(assets_dir)
    for attempt in range(retries):
        try:
            with SupersetClient(settings) as client:
                client.import_assets(bundle, passwords)
            break
        except httpx.HTTPError as e:  # a dropped connection: try again
            err = DashboardImportError(f"talking to Superset at {settings.superset.base_url}: {e}", True)
        except DashboardImportError as e:
            err = e
        if not err.retryable or attempt == retries - 1:
            raise err
        time.sleep(2 * (attempt + 1))
    return ImportResult(
        seconds=time.monotonic() - t0,
        dashboards=dashboards_in(assets_dir),
        charts=sum(1 for rel in files if rel.startswith("charts/")),
        datasets=sum(1 for rel in files if rel.startswith("datasets/")),
    )


def dashboard_url(settings: Settings, slug: str) -> str:
    return f"{settings.superset.base_url}/superset/dashboard/{slug}/"


def summary_lines(settings: Settings) -> list[str]:
    """What the demo summary prints about Superset: URL, login and one link per dashboard."""
    s = settings.superset
    if not s.enabled:
        return ["Superset    disabled (SHOPSTREAM_SUPERSET__ENABLED=false)"]
    lines = [f"Superset    {s.base_url}  (login {s.admin_user} / {s.admin_password.get_secret_value()})"]
    try:
        lines += [f"  {d.title:<22} {dashboard_url(settings, d.slug)}" for d in dashboards_in()]
    except (OSError, DashboardImportError, yaml.YAMLError):
        pass
    return lines
