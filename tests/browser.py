"""Shared by the browser tests: where Debian's chromium is, and a screenshot of an HTML page opened from disk."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).exists()), None)
SKIP_REASON = "no Chromium binary on this machine (make test installs Debian's chromium with apt; install it to run "\
              "this test)"


def launch(playwright):
    """Headless chromium from Debian's package (Playwright's own browser download does not work offline)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])


def local_only(page) -> tuple[list[str], list[str]]:
    """Block every request of a playwright page that is not a file on disk; returns the lists that collect the
    blocked URLs and the page errors."""
    outside, errors = [], []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def route(request_route):
        if request_route.request.url.startswith("file://"):
            request_route.continue_()
        else:
            outside.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    return outside, errors


def screenshot_page(page_file: Path, artifact: Path, width: int = 1100) -> dict:
    """Open ``page_file`` from disk in headless chromium with every non-file request blocked, wait for the math
    to render, save a full-page screenshot; returns the load time, the page errors and the blocked requests."""
    from playwright.sync_api import sync_playwright

    artifact.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": width, "height": 900})
        outside, errors = local_only(page)
        start = time.perf_counter()
        page.goto(page_file.as_uri(), wait_until="load")
        seconds = time.perf_counter() - start
        if page.locator("mjx-container, .MathJax").count() == 0 and "$" in page_file.read_text(errors="ignore"):
            page.wait_for_timeout(1500)  # give MathJax a moment on pages with math
        page.screenshot(path=str(artifact), full_page=True)
        browser.close()
    return {"load_seconds": round(seconds, 2), "errors": errors, "outside": outside,
            "bytes": page_file.stat().st_size}
