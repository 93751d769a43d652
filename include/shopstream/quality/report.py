"""A suite run's report: this run's Data Docs pages plus a summary page, on local disk and in the lake.

Layout (the same under both roots, so relative links inside GE's pages keep working)::

    <state_dir>/dq-reports/<run>/<layer>/index.html          summary of this run (written here)
                                       /validations/...       GE Data Docs pages of this run
                                       /expectations/...      GE pages of the suites
    s3://<lake_bucket>/dq-reports/<run>/<layer>/...           the same files

``<run>`` is the run id made safe for paths and URLs (:func:`run_slug`). The Airflow plugin serves
``/dq/reports/<run>/<layer>/<page>`` from the local folder, or from the lake when the api-server does
not share the worker's disk.
"""

from __future__ import annotations

import hashlib
import html
import io
import mimetypes
import re
import shutil
from pathlib import Path, PurePosixPath

from shopstream.quality.results import SuiteResult, format_value, observed_summary

REPORTS_PREFIX = "dq-reports"
PLUGIN_PREFIX = "/dq"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
# GE's pages load a logo from GE's S3 bucket with the data context id in the URL: drop that request.
_GE_LOGO = re.compile(r'src="https://great-expectations-web-assets\.s3[^"]*"')
_PAGE_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def run_slug(run_id: str) -> str:
    """``run_id`` as one safe path segment; a short hash keeps distinct ids distinct after replacing."""
    slug = _SAFE.sub("_", run_id).strip(".") or "run"
    if slug != run_id:
        slug = f"{slug[:120]}-{hashlib.sha1(run_id.encode()).hexdigest()[:8]}"
    return slug


def report_prefix(run_id: str, layer: str) -> str:
    """Lake key prefix (and local sub-path) of a run's report: ``dq-reports/<run>/<layer>``."""
    return f"{REPORTS_PREFIX}/{run_slug(run_id)}/{layer}"


def local_reports_root(state_dir: Path) -> Path:
    return Path(state_dir) / REPORTS_PREFIX


def report_url(base_url: str, run_id: str, layer: str, page: str = "index.html") -> str:
    return f"{base_url.rstrip('/')}{PLUGIN_PREFIX}/reports/{run_slug(run_id)}/{layer}/{page}"


def safe_page(path: str) -> str | None:
    """A report-relative page path if it is safe to serve (no traversal, no odd characters), else None."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or not _PAGE_RE.match(path):
        return None
    return str(p)


def collect_data_docs(site_dir: Path, suite_names: list[str], run_name: str, dest: Path) -> list[str]:
    """Copy this run's GE pages (validations/<suite>/<run_name>/** and expectations/<suite>.html) to dest."""
    pages: list[str] = []
    for suite in suite_names:
        for src_root, pattern in (
            (site_dir / "validations" / suite / run_name, "**/*.html"),
            (site_dir / "expectations", f"{suite}.html"),
        ):
            if not src_root.exists():
                continue
            for src in sorted(src_root.glob(pattern)):
                rel = src.relative_to(site_dir)
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(_GE_LOGO.sub('src=""', src.read_text(encoding="utf-8")), encoding="utf-8")
                if "validations" in rel.parts:
                    pages.append(rel.as_posix())
    return pages


def write_bundle(result: SuiteResult, dest: Path, site_dir: Path, suite_names: list[str], run_name: str) -> Path:
    """(Re)build the report folder for this run: GE pages + index.html. Returns the index path."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    result.data_docs = collect_data_docs(site_dir, suite_names, run_name, dest)
    index = dest / "index.html"
    index.write_text(render_index(result), encoding="utf-8")
    return index


def upload_bundle(client, bucket: str, local_dir: Path, prefix: str) -> list[str]:
    """Replace the lake copy under ``prefix`` with the files of ``local_dir`` (idempotent per run)."""
    stale = [o.object_name for o in client.list_objects(bucket, prefix=prefix + "/", recursive=True)]
    keys: list[str] = []
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(local_dir).as_posix()}"
        data = path.read_bytes()
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=ctype)
        keys.append(key)
    for key in stale:
        if key not in keys:
            client.remove_object(bucket, key)
    return keys


# ---------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.2rem;color:#1a202c;background:#fff}
h1{font-size:1.3rem;margin:0 0 .4rem} h2{font-size:1.05rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse;width:100%;font-size:.85rem} th,td{border:1px solid #e2e8f0;padding:.3rem .45rem;
text-align:left;vertical-align:top} th{background:#f7fafc} code{font-size:.8rem;word-break:break-all}
.pass{color:#276749;font-weight:600} .fail{color:#c53030;font-weight:600} .warn{color:#b7791f;font-weight:600}
.muted{color:#718096} a{color:#2b6cb0} .pill{display:inline-block;padding:0 .45rem;border-radius:.6rem;
font-size:.75rem;font-weight:600} .pill.pass{background:#c6f6d5} .pill.fail{background:#fed7d7}
.pill.warn{background:#fefcbf}
@media (prefers-color-scheme: dark){body{background:#1a202c;color:#e2e8f0} th{background:#2d3748}
th,td{border-color:#4a5568} a{color:#90cdf4}}
"""


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>"
    )


def status_pill(success: bool, warnings: int = 0) -> str:
    if not success:
        return "<span class='pill fail'>FAILED</span>"
    if warnings:
        return f"<span class='pill warn'>PASSED, {warnings} warning(s)</span>"
    return "<span class='pill pass'>PASSED</span>"


def render_index(result: SuiteResult) -> str:
    e = html.escape
    rows = []
    for o in sorted(result.outcomes, key=lambda o: (o.success, o.severity != "critical")):
        if o.success:
            state = "<span class='pass'>pass</span>"
        elif o.severity == "critical":
            state = "<span class='fail'>FAIL</span>"
        else:
            state = "<span class='warn'>warn</span>"
        detail = e(observed_summary(o) if not o.success else (o.observed_text() or ""))
        samples = "<br>".join(e(format_value(v)) for v in o.sample_values)
        rows.append(
            f"<tr><td>{state}</td><td>{e(o.severity)}</td><td><code>{e(o.expectation)}</code></td>"
            f"<td>{detail}</td><td>{'' if o.unexpected_count is None else o.unexpected_count}</td>"
            f"<td><code>{samples}</code></td><td class='muted'>{e(o.why)}</td></tr>"
        )
    docs = "".join(f"<li><a href='{e(p)}'>{e(p.split('/')[1])}</a></li>" for p in result.data_docs)
    where = f"<br>where: <code>{e(str(result.where))}</code>" if result.where else ""
    body = (
        f"<h1>Data quality: {e(result.layer)} {status_pill(result.success, len(result.warnings))}</h1>"
        f"<div class='muted'>run <code>{e(result.run_id)}</code> &middot; "
        f"{result.started_at:%Y-%m-%d %H:%M:%S} to {result.finished_at:%H:%M:%S} UTC &middot; "
        f"{result.evaluated} evaluated, {len(result.critical_failures)} critical failure(s), "
        f"{len(result.warnings)} warning(s){where}</div>"
        "<h2>Expectations</h2><table><tr><th>result</th><th>severity</th><th>expectation</th>"
        "<th>observed</th><th>unexpected</th><th>sample</th><th>why</th></tr>"
        + "".join(rows) + "</table>"
        f"<h2>Great Expectations Data Docs of this run</h2><ul>{docs or '<li>none</li>'}</ul>"
    )
    return page(f"DQ {result.layer} {result.run_id}", body)
