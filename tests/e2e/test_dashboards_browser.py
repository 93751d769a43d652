"""Each Superset dashboard rendered in headless Chromium (Debian's chromium + chromium-driver, driven by
selenium): log in, open the dashboard, wait for every chart, assert none shows an error or nothing, and save
a screenshot per dashboard under docs/screenshots/ (look at them: they are what a person sees)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from shopstream.dashboards.importer import SupersetClient, dashboard_url, dashboards_in, import_dashboards
from shopstream.settings import REPO_ROOT, Settings
from shopstream.warehouse.ddl import ensure_schemas
from tests.integration.test_dashboards import load_demo_data, unload_demo_data

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SCREENSHOT_DIR = REPO_ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def superset(stack, stack_settings: Settings) -> Iterator[Settings]:
    """The stack's Superset with the dashboards imported and the demo rows in the warehouse (removed after)."""
    if not stack_settings.superset.enabled:
        pytest.fail("SHOPSTREAM_SUPERSET__ENABLED is false: the browser test needs Superset in the stack")
    with psycopg.connect(stack_settings.postgres.dsn(), autocommit=True) as conn:
        ensure_schemas(conn)
        load_demo_data(conn)
    import_dashboards(stack_settings)
    yield stack_settings
    with psycopg.connect(stack_settings.postgres.dsn(), autocommit=True) as conn:
        unload_demo_data(conn)


@pytest.fixture(scope="module")
def client(superset: Settings) -> Iterator[SupersetClient]:
    with SupersetClient(superset) as c:
        yield c


# Debian's chromium, as the issue asks, plus a fixed window and no /dev/shm (small in containers).
CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1600,1400",
    "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
]

# What Superset draws for a chart whose query failed (an antd error alert beside the chart container) and
# for a chart without rows (an antd "empty" placeholder inside it).
ERROR_SELECTORS = [".ant-alert-error", ".alert-danger", "[data-test='error-message']"]
EMPTY_SELECTORS = [".ant-empty", "[data-test='empty-state']"]


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


def _login(driver, s: Settings) -> None:
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


def test_dashboards_render_in_chromium(superset: Settings, client: SupersetClient, browser):
    """Log in, open each dashboard, wait for every chart to draw, no error; save a screenshot each."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    _login(browser, superset)
    timings = {}
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
        shot = SCREENSHOT_DIR / f"{d.slug}.png"
        browser.save_screenshot(str(shot))
        assert len(states) == expected, f"{d.title}: {len(states)} charts on the page, expected {expected}"
        bad = [s for s in states if s["error"] or s["empty"] or not s["drawn"] or s["loading"]]
        assert not bad, f"{d.title}: charts not rendered or in error (screenshot {shot}): {bad}"
    print(f"dashboard render times (s): {timings}")


def _settled(state: dict) -> bool:
    return (state["drawn"] or bool(state["error"]) or state["empty"]) and not state["loading"]


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(1)
    return False


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
