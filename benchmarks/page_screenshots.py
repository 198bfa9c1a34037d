"""Screenshots of ``ddpg serve``'s page before, during and after a job, for the README: a real server (face64
on the CPU) and Debian's headless Chromium, set up as ``tests/test_web_page.py`` sets them up.

    python benchmarks/page_screenshots.py --out docs/images

Writes ``page_before.png`` (the form filled in), ``page_during.png`` (the engine held by the server's test hook
at step ``--hold-at``: the progress bar and the live x̂₀ preview) and ``page_after.png`` (the before/after
slider, the metrics and the download button): each what a phone's screen (``--width`` × ``--height`` CSS
pixels) shows, scrolled to that part of the page, reduced to a 256-colour palette so each stays small (the
sizes are printed). The job takes the preset's steps (100 for face64) unless ``--steps`` says otherwise."""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from ddpg.io import atomic_write  # noqa: E402
from ddpg.samples import sample_path  # noqa: E402
from headless_chromium import missing_browser, start_chromium  # noqa: E402
from test_serve_http import WAIT_S, ServerProcess  # noqa: E402

COLOURS = 256


def save_screen(browser, path: Path, element: str, block: str) -> int:
    """The window, scrolled to put ``element`` at its ``block`` (start | end), written to ``path`` as a palette
    PNG; its bytes."""
    browser.execute_script(f"document.getElementById('{element}').scrollIntoView({{block: '{block}'}})")
    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    small = shot.quantize(COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    atomic_write(path, lambda tmp: small.save(tmp, format="PNG", optimize=True))
    return path.stat().st_size


def wait_for(browser, condition, what: str):
    return WebDriverWait(browser, WAIT_S, poll_frequency=0.05).until(condition, message=f"waiting for {what}")


def fill_form(browser, steps: int | None) -> None:
    browser.find_element(By.ID, "image").send_keys(str(sample_path()))
    Select(browser.find_element(By.ID, "task")).select_by_value("sr4")
    Select(browser.find_element(By.ID, "method")).select_by_value("ddpg")
    if steps is not None:
        browser.find_element(By.ID, "steps").send_keys(str(steps))
    browser.find_element(By.ID, "seed").clear()
    browser.find_element(By.ID, "seed").send_keys("3")


def shoot(server: ServerProcess, browser, out: Path, args) -> None:
    """The three screenshots of one job on ``server``."""
    browser.get(server.url + "/")
    wait_for(browser, lambda b: Select(b.find_element(By.ID, "task")).options, "the form")
    fill_form(browser, args.steps)
    print(f"page_before.png: {save_screen(browser, out / 'page_before.png', 'restore-form', 'start'):,} bytes")
    browser.find_element(By.ID, "submit").click()
    try:
        wait_for(browser, lambda b: int(b.find_element(By.ID, "progress").get_attribute("value")) >= args.hold_at,
                 f"step {args.hold_at}")
        server.pause(True)
        print(f"page_during.png: {save_screen(browser, out / 'page_during.png', 'job', 'end'):,} bytes")
    finally:
        server.pause(False)
    wait_for(browser, lambda b: b.find_element(By.ID, "result").is_displayed(), "the result")
    print(f"page_after.png: {save_screen(browser, out / 'page_after.png', 'result', 'start'):,} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--width", type=int, default=390, help="window width in CSS pixels (a phone's)")
    parser.add_argument("--height", type=int, default=844, help="window height in CSS pixels")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the preset's)")
    parser.add_argument("--hold-at", type=int, default=30, help="the step the 'during' screenshot is taken at")
    args = parser.parse_args()
    reason = missing_browser()
    if reason:
        sys.exit(reason)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), "--prior", "face64", "--max-batch", "1")
        browser = start_chromium(Path(tmp), args.width, args.height)
        try:
            shoot(server, browser, args.out, args)
        finally:
            browser.quit()
            server.stop()


if __name__ == "__main__":
    main()
