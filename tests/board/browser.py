"""Debian's chromium, headless, driven by Selenium through Debian's chromedriver (nothing downloaded)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@contextmanager
def chromium(width: int = 1400, height: int = 900) -> Iterator[Any]:
    """A fresh headless chromium (its own --user-data-dir), quit and removed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser_path, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser_path or not driver_path:
        raise RuntimeError("install Debian's chromium and chromium-driver (`.ci/run` does)")
    profile = tempfile.mkdtemp(prefix="mnist-lab-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(predicate, timeout_s: float = 30, interval_s: float = 0.1) -> Any:
    """`predicate()`'s first truthy answer, polled; AssertionError after `timeout_s`.

    An element the page re-rendered between finding it and reading it (StaleElementReferenceException) is
    "not yet": the page is still changing, so the predicate is asked again."""
    import time

    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except StaleElementReferenceException:
            value = None
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"not within {timeout_s} s: {getattr(predicate, '__doc__', None) or predicate}")
