"""The built documentation site renders in a real browser: headless Chromium (the system package)
driven by Selenium, over a local HTTP server (search needs http, not file://).

Checked: the home page with its navigation tabs and a working search (results for a public name);
a tutorial with its executed plots (images decoded by the browser); an API page with its entries
and the navigation to the other packages. Screenshots are kept in ``$IIT_ARTIFACTS`` (default
``/tmp/iit-artifacts``), outside the repository.

Needs the site (``python3 dev.py docs``) and ``chromium`` + ``chromium-driver``; without them the
test is skipped, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "site"
ARTIFACTS = Path(os.environ.get("IIT_ARTIFACTS", "/tmp/iit-artifacts"))
TIMEOUT_S = 30

pytestmark = pytest.mark.site


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """The built site served on a free local port."""
    if not (SITE / "index.html").exists():
        _unavailable(f"no built site at {SITE}; run `python3 dev.py docs`")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(SITE)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless system Chromium through the system chromedriver (no driver download)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        _unavailable("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(TIMEOUT_S)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: object, condition: object) -> object:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, TIMEOUT_S).until(condition)


def _screenshot(driver: object, name: str) -> Path:
    path = ARTIFACTS / f"site_{name}.png"
    driver.get_screenshot_as_file(str(path))
    print(f"screenshot: {path}")
    return path


def test_home_page_navigation_and_search(browser: object, base_url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(base_url + "/")
    assert "iit" in browser.title
    tabs = [t.text.strip() for t in browser.find_elements(By.CSS_SELECTOR, ".md-tabs__link")]
    for section in ("Getting started", "Concepts", "Tutorials", "API reference", "Errors"):
        assert section in tabs, f"navigation tab {section!r} missing; tabs: {tabs}"
    _screenshot(browser, "home")

    # search: the index is loaded by a web worker; typing a public name lists pages about it
    browser.find_element(By.CSS_SELECTOR, "label.md-search__icon, .md-search__input").click()
    box = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "input.md-search__input"))
    box.send_keys("Interchange")
    results = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".md-search-result__item") or False)
    assert len(results) >= 1
    assert any("nterchange" in r.text for r in results), [r.text[:80] for r in results]
    _screenshot(browser, "search")


def test_tutorial_shows_its_plots(browser: object, base_url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(base_url + "/tutorials/iit_training/")
    heading = browser.find_element(By.TAG_NAME, "h1").text
    assert "Interchange intervention training" in heading, heading
    images = browser.find_elements(By.CSS_SELECTOR, "img[src^='data:image/png']")
    assert images, "the executed notebook shows no plot"
    decoded = [browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) for img in images]
    assert all(width and width > 100 for width in decoded), decoded
    assert browser.find_elements(By.CSS_SELECTOR, ".md-nav__link"), "no navigation on the tutorial page"
    _screenshot(browser, "tutorial")


def test_api_page_renders_entries_and_navigation(browser: object, base_url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(base_url + "/reference/iit/")
    ids = {e.get_attribute("id") for e in browser.find_elements(By.CSS_SELECTOR, "h2[id]")}
    assert "iit.interventionable.Interventionable" in ids, sorted(ids)[:20]
    assert "iit.interventions.Interchange" in ids
    body = browser.find_element(By.CSS_SELECTOR, "article").text
    assert "Raises:" in body or "RAISES" in body.upper()
    links = [a.text.strip() for a in browser.find_elements(By.CSS_SELECTOR, ".md-nav__link")]
    assert "iit.training" in links and "causal_models" in links, links
    _screenshot(browser, "api_iit")
