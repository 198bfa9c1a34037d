"""Debian's headless Chromium driven by Selenium, for the page test (``test_web_page.py``) and the page's
screenshots (``benchmarks/page_screenshots.py``): the browser and its driver from the ``chromium`` and
``chromium-driver`` packages (``.ci/run`` installs them), never one Selenium would download."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

INSTALL = ("install them with `apt-get update && apt-get install -y chromium chromium-driver` (as root; .ci/run "
           "does) and selenium with `pip install -e '.[test]'`")


def browser_paths() -> tuple[str | None, str | None]:
    """(chromium, chromedriver) on PATH or in /usr/bin, None for one that is missing."""
    return (shutil.which("chromium") or shutil.which("chromium-browser"),
            shutil.which("chromedriver") or shutil.which("chromium.chromedriver"))


def missing_browser() -> str | None:
    """Why no headless Chromium can be driven here (what is missing and how to install it), or None."""
    chromium, driver = browser_paths()
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver)) if path is None]
    if importlib.util.find_spec("selenium") is None:
        missing.append("the selenium package")
    return f"NO BROWSER TEST: {', '.join(missing)} missing; {INSTALL}" if missing else None


def start_chromium(downloads: Path, width: int, height: int):
    """A headless Chromium window of ``width`` × ``height`` CSS pixels (device scale 1) whose downloads land in
    ``downloads``, with the browser console kept for :func:`console_errors`."""
    from selenium import webdriver

    chromium, driver = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--force-device-scale-factor=1", "--hide-scrollbars", f"--window-size={width},{height}",
                     "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    return browser


def console_errors(browser) -> list[str]:
    """The page's console errors since the last call, less failed loads (a 4xx the page shows is one)."""
    return [entry["message"] for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and entry.get("source") != "network"]
