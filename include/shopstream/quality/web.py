"""The "Data quality" page of the Airflow UI: a FastAPI app the plugin mounts at ``/dq`` on the api-server.

Routes (all behind Airflow's login, except the nav icon)::

    GET /dq/                                 recent suite runs (dq.runs), links to each run's report
    GET /dq/runs/{suite}?run_id=...          one run's expectation results (dq.results)
    GET /dq/api/runs                         the same list as JSON
    GET /dq/reports/{run}/{layer}/{page}     a report page: summary + Data Docs (local disk, else the lake)

Authentication reuses the api-server's own: :func:`airflow.api_fastapi.core_api.security.get_user`
accepts the ``Authorization: Bearer <JWT>`` header (REST clients, ``POST /auth/token``) or the ``_token``
cookie the UI sets at login (the page is shown in an iframe of the UI, same origin, so the cookie comes
along). Then the auth manager must allow the user the ``WEBSITE`` view. Without a valid token the answer is
401 (403 for a malformed token); a browser (``Accept: text/html``) is redirected to the login page instead.
No route returns data before that check.

Airflow modules are imported inside the dependency (the plugin file is also imported by components that
never serve it, and the security module takes about a second to import).
"""

from __future__ import annotations

import html
import inspect
import logging
import mimetypes
import re
from datetime import datetime
from typing import Any

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from shopstream.quality.report import PLUGIN_PREFIX, REPORTS_PREFIX, local_reports_root, page, safe_page
from shopstream.quality.store import format_shares, recent_runs, run_results, set_aside_shares
from shopstream.quality.suites import LAYERS
from shopstream.settings import Settings, get_settings

log = logging.getLogger(__name__)
_RUN_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")

ICON_SVG = (
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' stroke='currentColor' "
    "stroke-width='2' stroke-linecap='round' stroke-linejoin='round'><path d='M9 11l3 3L22 4'/>"
    "<path d='M21 12v7a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h11'/></svg>"
)


async def require_airflow_user(request: Request) -> Any:
    """FastAPI dependency: the Airflow user of this request (JWT from header or cookie), or 401/403."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    params = inspect.signature(get_user).parameters
    kwargs: dict[str, Any] = {"request": request}
    if "bearer_credentials" in params:
        kwargs["bearer_credentials"] = credentials
    if "_oauth_token" in params:
        kwargs["_oauth_token"] = None
    user = await get_user(**kwargs)
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(status_code=403, detail="Forbidden: this user may not view the data quality page")
    return user


def _login_redirect(request: Request) -> Response | None:
    """Browsers without a valid token go to Airflow's login page (then back here)."""
    if request.method != "GET" or "text/html" not in request.headers.get("accept", ""):
        return None
    try:
        from airflow.api_fastapi.app import get_auth_manager

        target = get_auth_manager().get_url_login(next_url=str(request.url))
    except Exception:  # noqa: BLE001 - no auth manager (not in the api-server): plain 401
        return None
    return RedirectResponse(target, status_code=302)


def create_app(settings_factory=get_settings) -> FastAPI:
    """The FastAPI app of the page (``settings_factory`` is read per request, so env changes apply)."""
    app = FastAPI(title="shopstream data quality", docs_url=None, redoc_url=None, openapi_url=None)
    auth = [Depends(require_airflow_user)]

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (401, 403) and (redirect := _login_redirect(request)) is not None:
            return redirect
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.get("/icon.svg", include_in_schema=False)
    def icon() -> Response:
        return Response(ICON_SVG, media_type="image/svg+xml")

    @app.get("/", response_class=HTMLResponse, dependencies=auth)
    def index(request: Request, suite: str | None = None, run_id: str | None = None,
              limit: int = Query(100, ge=1, le=1000)) -> HTMLResponse:
        rows, problem = _runs(settings_factory(), limit, suite, run_id)
        return HTMLResponse(render_runs_page(rows, _root(request), suite, run_id, problem))

    @app.get("/api/runs", dependencies=auth)
    def api_runs(suite: str | None = None, run_id: str | None = None,
                 limit: int = Query(100, ge=1, le=1000)) -> JSONResponse:
        rows, problem = _runs(settings_factory(), limit, suite, run_id)
        if problem:
            raise HTTPException(status_code=503, detail=problem)
        return JSONResponse([{k: _jsonable(v) for k, v in r.items()} for r in rows])

    @app.get("/runs/{suite}", response_class=HTMLResponse, dependencies=auth)
    def run_page(request: Request, suite: str, run_id: str) -> HTMLResponse:
        if suite not in LAYERS:
            raise HTTPException(status_code=404, detail=f"unknown suite {suite!r}")
        s = settings_factory()
        with psycopg.connect(s.postgres.dsn(), connect_timeout=5) as conn:
            runs = recent_runs(conn, 1, suite, run_id)
            results = run_results(conn, run_id, suite)
            shares = set_aside_shares(conn, [run_id]).get(run_id) if suite == "silver" else None
        if not runs:
            raise HTTPException(status_code=404, detail=f"no {suite} run {run_id!r} in dq.runs")
        return HTMLResponse(render_results_page(runs[0], results, _root(request), shares))

    @app.get("/reports/{run}/{layer}/{page_path:path}", dependencies=auth)
    def report(run: str, layer: str, page_path: str) -> Response:
        rel = safe_page(page_path)
        if not _RUN_RE.match(run) or layer not in LAYERS or rel is None:
            raise HTTPException(status_code=404, detail="no such report page")
        s = settings_factory()
        local = local_reports_root(s.state_dir) / run / layer / rel
        if local.is_file():
            return FileResponse(local, media_type=_media_type(local.name))
        body = _from_lake(s, f"{REPORTS_PREFIX}/{run}/{layer}/{rel}")
        if body is None:
            raise HTTPException(status_code=404, detail="no such report page")
        return Response(body, media_type=_media_type(rel))

    return app


def _root(request: Request) -> str:
    """Where this app is mounted (``/dq`` on the api-server)."""
    return (request.scope.get("root_path") or PLUGIN_PREFIX).rstrip("/")


def _media_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _runs(s: Settings, limit: int, suite: str | None, run_id: str | None) -> tuple[list[dict], str | None]:
    try:
        with psycopg.connect(s.postgres.dsn(), connect_timeout=5) as conn:
            rows = recent_runs(conn, limit, suite, run_id)
            shares = set_aside_shares(conn, [r["run_id"] for r in rows if r["suite"] == "silver"])
            for r in rows:
                r["shares"] = shares.get(r["run_id"]) if r["suite"] == "silver" else None
            return rows, None
    except psycopg.errors.UndefinedTable:
        return [], "The dq tables do not exist yet: no suite has run."
    except psycopg.Error as e:
        log.warning("dq page: cannot read dq.runs: %s", e)
        return [], f"Cannot read dq.runs from the warehouse ({type(e).__name__})."


def _from_lake(s: Settings, key: str) -> bytes | None:
    from minio.error import S3Error

    from shopstream.stack.s3 import minio_client

    try:
        resp = minio_client(s).get_object(s.s3.lake_bucket, key)
    except S3Error:
        return None
    except Exception as e:  # noqa: BLE001 - endpoint down: the page says "not found" rather than 500
        log.warning("dq page: cannot read %s from the lake: %s", key, e)
        return None
    try:
        return resp.read()
    finally:
        resp.close()
        resp.release_conn()


def _jsonable(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def _report_link(root: str, report_key: str | None) -> str | None:
    """``dq-reports/<run>/<layer>/index.html`` in the lake -> the page that serves it here."""
    if not report_key or not report_key.startswith(REPORTS_PREFIX + "/"):
        return None
    return f"{root}/reports/{report_key[len(REPORTS_PREFIX) + 1:]}"


# ---------------------------------------------------------------------------- HTML
def render_runs_page(rows: list[dict], root: str, suite: str | None, run_id: str | None,
                     problem: str | None = None) -> str:
    e = html.escape
    options = "".join(
        f"<option value='{x}'{' selected' if x == suite else ''}>{x}</option>" for x in LAYERS
    )
    form = (
        f"<form method='get' action='{e(root)}/' style='margin:.6rem 0'>suite <select name='suite'>"
        f"<option value=''>all</option>{options}</select> run id <input name='run_id' size='40' "
        f"value='{e(run_id or '')}'> <button type='submit'>filter</button></form>"
    )
    body_rows = []
    for r in rows:
        link = _report_link(root, r.get("report_key"))
        details = f"{root}/runs/{e(r['suite'])}?run_id={e(_quote(r['run_id']))}"
        status = ("<span class='pill pass'>passed</span>" if r["success"]
                  else "<span class='pill fail'>FAILED</span>")
        shares = r.get("shares")
        body_rows.append(
            f"<tr><td><code>{e(r['run_id'])}</code></td><td>{e(r['suite'])}</td><td>{status}</td>"
            f"<td>{r['evaluated']}</td><td>{r['failed']}</td>"
            f"<td>{e(format_shares(shares)) if shares else ''}</td>"
            f"<td>{r['finished_at']:%Y-%m-%d %H:%M:%S}</td>"
            f"<td><a href='{details}'>results</a>"
            + (f" &middot; <a href='{e(link)}'>report</a>" if link else "") + "</td></tr>"
        )
    table = (
        "<table><tr><th>run</th><th>suite</th><th>result</th><th>evaluated</th><th>failed</th>"
        "<th>set aside (silver)</th><th>finished (UTC)</th><th></th></tr>" + "".join(body_rows) + "</table>"
        if body_rows else f"<p class='muted'>{e(problem or 'No suite runs recorded yet.')}</p>"
    )
    body = (
        "<h1>Data quality</h1><div class='muted'>Great Expectations suites per layer (bronze, silver, "
        "gold); newest first. <em>failed</em> counts every failed expectation; a run fails only on a "
        "critical one. <em>set aside</em>: the shares of a silver run's rows set aside as late, dropped as "
        "duplicates and rejected (checked against SHOPSTREAM_PIPELINE__SET_ASIDE_WARNING_SHARE / "
        "_CRITICAL_SHARE).</div>" + form + table
    )
    return page("Data quality", body)


def render_results_page(run: dict, results: list[dict], root: str, shares: dict | None = None) -> str:
    e = html.escape
    link = _report_link(root, run.get("report_key"))
    rows = []
    for r in results:
        cls = "pass" if r["success"] else ("fail" if r["severity"] == "critical" else "warn")
        rows.append(
            f"<tr><td class='{cls}'>{'pass' if r['success'] else 'FAIL'}</td><td>{e(r['severity'])}</td>"
            f"<td><code>{e(r['expectation'])}</code></td><td>{e(r['observed_value'] or '')}</td>"
            f"<td>{'' if r['unexpected_count'] is None else r['unexpected_count']}</td>"
            f"<td><code>{e(r['sample_values'] or '')}</code></td></tr>"
        )
    body = (
        f"<p><a href='{e(root)}/'>&larr; all runs</a></p>"
        f"<h1>{e(run['suite'])} &middot; <code>{e(run['run_id'])}</code> "
        + ("<span class='pill pass'>passed</span>" if run["success"] else "<span class='pill fail'>FAILED</span>")
        + f"</h1><div class='muted'>{run['evaluated']} evaluated, {run['failed']} failed, finished "
        f"{run['finished_at']:%Y-%m-%d %H:%M:%S} UTC"
        + (f" &middot; <a href='{e(link)}'>full report with Data Docs</a>" if link else "") + "</div>"
        + (f"<p><strong>Set aside by this run:</strong> {e(format_shares(shares))}</p>" if shares else "")
        + "<table><tr><th>result</th><th>severity</th><th>expectation</th><th>observed</th>"
        "<th>unexpected</th><th>sample</th></tr>" + "".join(rows) + "</table>"
    )
    return page(f"DQ {run['suite']} {run['run_id']}", body)


def _quote(v: str) -> str:
    from urllib.parse import quote

    return quote(v, safe="")


app = create_app()

__all__ = ["app", "create_app", "require_airflow_user"]
