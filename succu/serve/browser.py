"""Headless Chromium driven by Selenium: the page's browser test and its screenshots.

Debian's `chromium` and `chromium-driver` packages provide the browser and its driver
(`.ci/run` installs them); Selenium comes with the `serve-test` extra. The driver is named
explicitly, so Selenium never tries to download one. The flags keep a headless Chromium off the
network (no background requests, updates or sync) and let it run as root in a container.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")
BROWSERS = ("chromium", "chromium-browser")


def browser_problem() -> str | None:
    """None when a browser test can run here, else one line saying what is missing and how to
    get it."""
    if importlib.util.find_spec("selenium") is None:
        return 'selenium is not installed: pip install -e ".[serve-test]"'
    if not any(shutil.which(name) for name in BROWSERS):
        return "chromium is not installed: apt-get install chromium chromium-driver"
    if not shutil.which("chromedriver"):
        return "chromedriver is not installed: apt-get install chromium-driver"
    return None


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless Chromium WebDriver with a fresh profile, quit (and the profile removed) after."""
    problem = browser_problem()
    if problem:
        raise RuntimeError(problem)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="succu-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = next(shutil.which(n) for n in BROWSERS if shutil.which(n))
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(driver: Any, condition, timeout: float, what: str) -> Any:
    """`condition(driver)` once truthy, or a TimeoutError saying `what` did not happen."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    except TimeoutException:
        raise TimeoutError(f"the page: {what} within {timeout:g} s") from None


def open_page(driver: Any, url: str, timeout: float = 20) -> None:
    driver.get(url)
    wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready === '1'"),
             timeout, "never finished reading /info")


def pane_state(driver: Any, pane: str) -> str:
    return driver.find_element("id", f"pane-{pane}").get_attribute("data-state") or ""


def screenshot(url: str, out: str | Path, prompt: str, positions: list[str], settings: dict[str, str],
               timeout: float = 120) -> Path:
    """Write a PNG of the page at `url` after streaming `prompt` at each of `positions` (one for
    a single pane, two side by side; none for a model without a dial) to the end."""
    with chromium() as driver:
        return capture(driver, url, out, prompt, positions, settings, timeout)


def capture(driver: Any, url: str, out: str | Path, prompt: str, positions: list[str],
            settings: dict[str, str], timeout: float = 120) -> Path:
    """`screenshot` in a browser that is already open; the window is fitted to the page."""
    from selenium.webdriver.common.by import By

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(1400 if len(positions) > 1 else 1100, 900)
    open_page(driver, url)
    for name, value in {"prompt": prompt, **settings}.items():
        field = driver.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)
    if len(positions) > 1:
        driver.find_element(By.ID, "compare").click()
    for pane, position in zip("ab", positions):
        driver.execute_script("window.succuPage.setPosition(arguments[0], arguments[1])", pane,
                              position)
    driver.find_element(By.ID, "go").click()
    panes = "ab"[: max(1, len(positions))]
    wait_for(driver, lambda d: all(pane_state(d, p) in ("done", "error") for p in panes),
             timeout, "streams did not finish")
    error = driver.find_element(By.ID, "error").text
    if error:
        raise ValueError(f"the page refused the request: {error}")
    for pane, position in zip("ab", positions):  # each pane ran where it was asked to
        used = driver.find_element(By.ID, f"used-{pane}").text
        if not used.startswith(f"alpha = {position} "):
            raise RuntimeError(f"pane {pane} was set to alpha {position} but shows {used!r}")
    save_page(driver, out)
    return out


def save_page(driver: Any, out: str | Path) -> None:
    """A PNG of the whole page, however tall: the viewport is stretched to the page for the shot
    (Chromium's DevTools protocol), since a screenshot only sees what is in the viewport."""
    width, height = driver.execute_script(
        "const e = document.documentElement; return [e.scrollWidth, e.scrollHeight]")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        if not driver.save_screenshot(str(out)):
            raise OSError(f"Chromium could not write the screenshot {out}")
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
