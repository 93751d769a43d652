"""What a person sees, in headless Chromium (Debian's chromium + chromium-driver, driven by selenium), after the
e2e data is in (tests/e2e/conftest.py: generated events through the data DAG, and the training run it starts).

Each page is screenshotted under docs/screenshots/ (look at them: they are what a person sees) and checked for
what a person looks for: every Superset chart draws without an error, date axes stay inside the data's event
days, the funnel shows numbers; Airflow's home shows no failed DAG; the scoring API's /docs lists its operations
and /redoc renders, with every asset served by the API itself (the browser resolves no other host); MLflow opens
the training experiment on its runs.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest

from shopstream.dashboards.importer import (
    SupersetClient,
    asset_files,
    dashboard_url,
    dashboards_in,
    import_dashboards,
)
from shopstream.settings import REPO_ROOT, Settings
from shopstream.training import tracking

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SCREENSHOT_DIR = REPO_ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def superset(stack, stack_settings: Settings, training_run) -> Settings:
    """The stack's Superset with the dashboards imported, over the e2e data (pipeline and training run)."""
    if not stack_settings.superset.enabled:
        pytest.fail("SHOPSTREAM_SUPERSET__ENABLED is false: the browser test needs Superset in the stack")
    import_dashboards(stack_settings)
    return stack_settings


@pytest.fixture(scope="module")
def client(superset: Settings) -> Iterator[SupersetClient]:
    with SupersetClient(superset) as c:
        yield c


@pytest.fixture(scope="module")
def event_days(stack_settings: Settings, data_run) -> tuple[date, date]:
    """First and last event day of the data (UTC)."""
    with psycopg.connect(stack_settings.postgres.dsn()) as conn:
        first, last = conn.execute("select min(event_time), max(event_time) from gold.fact_events").fetchone()
    return first.astimezone(UTC).date(), last.astimezone(UTC).date()


# Debian's chromium with a fixed window and no /dev/shm (small in containers). No host but loopback resolves:
# a page that needs the internet (a CDN, web fonts) shows it.
CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1600,1400",
    "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]

# What Superset draws for a chart whose query failed (an antd error alert beside the chart container) and
# for a chart without rows (an antd "empty" placeholder inside it).
ERROR_SELECTORS = [".ant-alert-error", ".alert-danger", "[data-test='error-message']"]
EMPTY_SELECTORS = [".ant-empty", "[data-test='empty-state']"]
# Superset 6.1's funnel numbers its label contents: 5 = "Category, Value and Percentage"
FUNNEL_KEY_VALUE_PERCENT = 5


@pytest.fixture(scope="module")
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: `apt-get install chromium chromium-driver` (make system-deps)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService

    profile = tempfile.mkdtemp(prefix="shopstream-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in [*CHROME_FLAGS, f"--user-data-dir={profile}"]:
        opts.add_argument(f)
    driver = webdriver.Chrome(service=ChromeService(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _shot(driver, name: str) -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return True
        except Exception:  # noqa: BLE001 - the page is still changing
            pass
        time.sleep(1)
    return False


def _text(driver) -> str:
    return driver.execute_script("return document.body ? document.body.innerText : ''") or ""


# ------------------------------------------------------------------------------------------ Superset
def _superset_login(driver, s: Settings) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{s.superset.base_url}/login/")
    wait = WebDriverWait(driver, 60)
    user = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input#username, input[name='username']")))
    user.send_keys(s.superset.admin_user)
    pw = driver.find_element(By.CSS_SELECTOR, "input#password, input[name='password']")
    pw.send_keys(s.superset.admin_password.get_secret_value())
    buttons = driver.find_elements(By.CSS_SELECTOR, "button[type='submit']")
    if buttons:
        buttons[0].click()
    else:
        pw.submit()
    wait.until(lambda d: "/login" not in d.current_url)


def _chart_states(driver) -> list[dict]:
    """Per chart on the page: title, still loading, drawn (canvas, table rows or a big number), error, empty."""
    return driver.execute_script(
        """
        const errSel = arguments[0].join(','), emptySel = arguments[1].join(',');
        return [...document.querySelectorAll('[data-test="dashboard-component-chart-holder"]')].map(h => {
          const title = (h.querySelector('[data-test="editable-title"]') || {}).textContent || '';
          const box = h.querySelector('[data-test="chart-container"]');
          const loading = !!h.querySelector('[data-test="loading-indicator"], .loading');
          const bigNumber = box && box.querySelector('.header-line');
          const drawn = !!box && (!!box.querySelector('canvas') || !!box.querySelector('table tbody tr')
                                  || (!!bigNumber && bigNumber.textContent.trim() !== ''));
          const error = [...h.querySelectorAll(errSel)].map(e => e.textContent.trim()).join(' | ');
          const empty = !!box && !!box.querySelector(emptySel);
          return {title: title.trim(), loading, drawn, error, empty};
        });
        """,
        ERROR_SELECTORS, EMPTY_SELECTORS,
    )


def _settled(state: dict) -> bool:
    return (state["drawn"] or bool(state["error"]) or state["empty"]) and not state["loading"]


def _dashboard_height(driver) -> int:
    """Height that shows the whole dashboard (the charts sit in an inner scroll area)."""
    height = driver.execute_script(
        """
        const holders = [...document.querySelectorAll('[data-test="dashboard-component-chart-holder"]')];
        return Math.max(document.documentElement.scrollHeight,
                        ...holders.map(h => h.getBoundingClientRect().bottom + window.scrollY + 40));
        """
    )
    return max(900, min(int(height) + 120, 5000))


def _funnel_tooltip(driver, title: str) -> str:
    """Hover the funnel's widest (top) segment and return the tooltip ECharts shows (HTML, unlike its canvas)."""
    from selenium.webdriver.common.action_chains import ActionChains

    holder = driver.execute_script(
        """
        return [...document.querySelectorAll('[data-test="dashboard-component-chart-holder"]')].find(h =>
          ((h.querySelector('[data-test="editable-title"]') || {}).textContent || '').trim() === arguments[0]);
        """, title)
    canvas = holder.find_element("css selector", "canvas")
    h = canvas.size["height"]
    texts = []
    for dy in (0.2, 0.3, 0.4):   # the top segment (views) sits in the upper part of the canvas
        ActionChains(driver).move_to_element_with_offset(canvas, 0, int(h * dy) - h // 2).perform()
        time.sleep(1.0)
        texts.append(driver.execute_script(
            "return [...document.querySelectorAll('div')].filter(d => d.style.zIndex === '9999999' && "
            "d.style.display !== 'none' && d.style.visibility !== 'hidden').map(d => d.innerText).join(' ')"))
        if any(re.search(r"\d", t) for t in texts):
            break
    return " ".join(texts)


def test_dashboards_render_in_chromium(superset: Settings, client: SupersetClient, browser):
    """Log in, open each dashboard, wait for every chart to draw, no error; save a screenshot each; the funnel
    shows its counts and the conversion between steps."""
    _superset_login(browser, superset)
    timings = {}
    funnel = next(c for c in asset_files().values() if c.get("viz_type") == "funnel")
    for d in dashboards_in():
        expected = len(client.get_json(f"/api/v1/dashboard/{d.slug}/charts")["result"])
        t0 = time.monotonic()
        browser.set_window_size(1600, 1400)
        browser.get(dashboard_url(superset, d.slug) + "?standalone=1")
        # once the layout is there, make the window as tall as the dashboard: every chart is in view
        _wait(lambda n=expected: len(_chart_states(browser)) >= n, 60)
        browser.set_window_size(1600, _dashboard_height(browser))
        _wait(lambda: all(_settled(s) for s in _chart_states(browser)), 150)
        time.sleep(2)  # let the charts finish their entry animations before the screenshot
        states = _chart_states(browser)
        timings[d.slug] = round(time.monotonic() - t0, 1)
        shot = _shot(browser, d.slug)
        assert len(states) == expected, f"{d.title}: {len(states)} charts on the page, expected {expected}"
        bad = [s for s in states if s["error"] or s["empty"] or not s["drawn"] or s["loading"]]
        assert not bad, f"{d.title}: charts not rendered or in error (screenshot {shot}): {bad}"
        if funnel["slice_name"] in {s["title"] for s in states}:
            tip = _funnel_tooltip(browser, funnel["slice_name"])
            assert re.search(r"\d[\d,]*", tip) and "%" in tip, f"the funnel shows no numbers: {tip!r} ({shot})"
    # the labels drawn on the funnel's canvas carry the count and the step conversion as well
    assert funnel["params"]["label_type"] == FUNNEL_KEY_VALUE_PERCENT and funnel["params"]["show_labels"]
    assert funnel["params"]["percent_calculation_type"] == "prev_step"
    print(f"dashboard render times (s): {timings}")


def _temporal_charts() -> list[dict]:
    """Charts whose x axis is a time column of their dataset."""
    files = asset_files()
    datasets = {str(c["uuid"]): c for rel, c in files.items() if rel.startswith("datasets/")}
    out = []
    for rel, c in files.items():
        if not rel.startswith("charts/") or "x_axis" not in c["params"]:
            continue
        ds = datasets[str(c["dataset_uuid"])]
        if any(col["column_name"] == c["params"]["x_axis"] and col["is_dttm"] for col in ds["columns"]):
            out.append(c)
    return out


def test_date_axes_stay_inside_the_event_days(superset: Settings, client: SupersetClient, event_days):
    """Every time axis plots event days of the data (no run or arrival times), labelled with the year."""
    first, last = event_days
    charts = _temporal_charts()
    assert len(charts) >= 5
    by_name = {c["slice_name"]: c for c in client.list_all("chart", ["id", "slice_name"])}
    for c in charts:
        assert "%Y" in c["params"].get("x_axis_time_format", ""), f"{c['slice_name']}: dates without the year"
        r = client.request("GET", f"/api/v1/chart/{by_name[c['slice_name']]['id']}/data/")
        assert r.status_code == 200, f"{c['slice_name']}: HTTP {r.status_code} {r.text[:300]}"
        (result,) = r.json()["result"]
        x = c["params"]["x_axis"]
        days = {datetime.fromtimestamp(row[x] / 1000, UTC).date() for row in result["data"]}
        assert days, f"{c['slice_name']}: no points"
        outside = sorted(d for d in days if not first <= d <= last)
        assert not outside, f"{c['slice_name']}: {outside} outside the event days {first}..{last}"


# ------------------------------------------------------------------------------------------ Airflow
def _airflow_login(driver, s: Settings) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(f"{s.airflow.base_url}/")
    assert _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "input[name='username'], input#username")
                 or "Dags" in _text(driver), 90), _text(driver)[:500]
    if driver.find_elements(By.CSS_SELECTOR, "input[name='username'], input#username"):
        driver.find_element(By.CSS_SELECTOR, "input[name='username'], input#username").send_keys(s.airflow.admin_user)
        pw = driver.find_element(By.CSS_SELECTOR, "input[name='password'], input#password")
        pw.send_keys(s.airflow.admin_password.get_secret_value())
        pw.send_keys(Keys.ENTER)


def test_airflow_home_shows_no_failed_dag(stack_settings: Settings, training_run, browser):
    """Airflow's home page after the data and training runs: its failed-DAG count is 0."""
    s = stack_settings
    _airflow_login(browser, s)
    assert _wait(lambda: re.search(r"Failed Dags?", _text(browser), re.I), 120), _text(browser)[:2000]
    time.sleep(3)   # the stats load after the frame
    text = _text(browser)
    shot = _shot(browser, "airflow-home")
    m = re.search(r"(\d+)\s*Failed Dags?\b", text, re.I)   # the stats card: the count above its label
    assert m, f"no failed-DAG count on Airflow's home ({shot}): {text[:2000]}"
    assert int(m.group(1)) == 0, f"Airflow's home shows failed DAGs ({shot}): {text[:2000]}"


# ------------------------------------------------------------------------------------------ scoring API docs
@pytest.fixture(scope="module")
def api(stack_settings: Settings, training_run) -> Iterator[str]:
    """The scoring API on the champion the training run made (served in this process on a loopback port)."""
    from tests.integration.test_serving import ApiServer

    server = ApiServer(stack_settings)
    try:
        yield server.url
    finally:
        server.stop()


OPERATIONS = {"POST /predict", "GET /health", "GET /ready", "GET /model", "GET /metrics"}


def test_api_docs_list_the_operations_offline(api: str, browser):
    """/docs (Swagger UI) lists every operation with its example request; /redoc renders; both from packaged
    assets (the browser resolves no host but loopback)."""
    from selenium.webdriver.common.by import By

    browser.set_window_size(1400, 1600)
    browser.get(f"{api}/docs")
    assert _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".opblock-summary")) >= len(OPERATIONS), 60), (
        f"Swagger UI did not render: {_text(browser)[:1000]}")
    ops = {re.sub(r"\s+", " ", e.text).strip() for e in browser.find_elements(
        By.CSS_SELECTOR, ".opblock-summary-method, .opblock-summary-path")}
    listed = {f"{m.text.strip()} {p.text.strip()}" for m, p in zip(
        browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-method"),
        browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"), strict=True)}
    assert OPERATIONS <= listed, (listed, ops)
    predict = next(e for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary")
                   if "/predict" in e.text)
    predict.click()
    # "Try it out" is open: the request body is an editable textarea holding the first example
    body = lambda: " ".join(t.get_attribute("value") or "" for t in browser.find_elements(By.CSS_SELECTOR, "textarea"))  # noqa: E731
    assert _wait(lambda: "user_session" in body() and "event_time" in body(), 30), (body(), _text(browser)[:2000])
    _shot(browser, "api-docs")

    browser.get(f"{api}/redoc")
    assert _wait(lambda: "Purchase probability of one cart-add" in _text(browser), 60), _text(browser)[:1000]
    time.sleep(1)
    _shot(browser, "api-redoc")
    # scripts, styles and the OpenAPI document come from the API itself (ReDoc's bundle still points its
    # "API docs by Redocly" footer logo at cdn.redoc.ly: that image alone stays blank offline)
    elsewhere = browser.execute_script(
        "return performance.getEntriesByType('resource').filter(e => !e.name.startsWith(arguments[0]) && "
        "e.initiatorType !== 'img').map(e => e.name)", api)
    assert not elsewhere, f"/redoc loaded from elsewhere: {elsewhere}"


# ------------------------------------------------------------------------------------------ MLflow
def test_mlflow_opens_the_training_experiment_on_its_runs(stack_settings: Settings, training_run, browser):
    s = stack_settings
    run, _ = training_run
    exp = tracking.client(s).get_experiment_by_name(s.mlflow.experiment)
    assert exp.tags.get(tracking.EXPERIMENT_KIND_TAG) == tracking.MODEL_TRAINING_KIND
    browser.set_window_size(1600, 1200)
    # the link the demo prints: the experiment's runs in MLflow 3.x's model-training view (not GenAI)
    browser.get(tracking.experiment_url(s.mlflow.uri, exp.experiment_id))
    name = f"training {run['dag_run_id']}"
    if not _wait(lambda: name in _text(browser), 60):
        from selenium.webdriver.common.by import By

        links = browser.find_elements(By.XPATH, "//a[normalize-space()='Training runs'] | //*[@role='tab' and "
                                                "normalize-space()='Training runs']")
        if links:
            links[0].click()
    assert _wait(lambda: name in _text(browser), 120), f"the runs are not shown: {_text(browser)[:2000]}"
    time.sleep(2)
    shot = _shot(browser, "mlflow-experiment")
    assert "/traces" not in browser.current_url, (browser.current_url, shot)
    assert "workflowType=genai" not in browser.current_url, (browser.current_url, shot)
