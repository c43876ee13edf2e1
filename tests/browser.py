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


def drive_pickers(page_file: Path, payloads: list[dict], artifact: Path) -> list[str]:
    """Open a built chapter page from disk (non-file requests blocked) and, in each subset picker, untick or
    tick one modality, and then pick another option of each control; after every click the figure shown must
    be the one saved for that state. Returns the state keys checked; raises AssertionError on a mismatch,
    a page error or a blocked request. A screenshot of the last picker is kept as a test artifact."""
    from playwright.sync_api import sync_playwright

    from mopoe_lib.viz.widgets import state_key

    def expected(payload: dict, key: str) -> list[str]:
        return [f"data:{item['mime']};base64,{item['data']}" for item in payload["states"].get(key, [])
                if item["type"] == "image"]

    checked = []
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        outside, errors = local_only(page)
        page.goto(page_file.as_uri(), wait_until="load")
        pickers = page.locator(".mopoe-picker")
        pickers.first.wait_for()
        page.wait_for_selector(".mopoe-picker.mopoe-ready")
        assert pickers.count() == len(payloads), (pickers.count(), len(payloads))
        for number, payload in enumerate(payloads):
            picker = pickers.nth(number)
            picker.scroll_into_view_if_needed()
            options = [c["index"] for c in payload["controls"]]
            members = set(payload["selected"])
            unticked = [m for m in range(len(payload["names"])) if m not in members]
            toggled = unticked[0] if unticked else max(members)
            clicks = [("check", toggled), ("check", toggled), *(("control", c) for c in range(len(options)))]
            for kind, which in clicks:
                if kind == "check":
                    picker.locator(f'.mopoe-checks input[value="{which}"]').click()
                    members ^= {which}
                else:
                    options[which] = (options[which] + 1) % len(payload["controls"][which]["labels"])
                    picker.locator(".mopoe-control").nth(which).locator(f'button[data-index="{options[which]}"]').click()
                key = state_key(members, options)
                assert picker.get_attribute("data-state") == key, (picker.get_attribute("data-state"), key)
                shown = [img.get_attribute("src") for img in picker.locator(".mopoe-output img").all()]
                assert shown == expected(payload, key) and shown, f"picker {number}, state {key}: wrong figure"
                checked.append(key)
        picker.screenshot(path=str(artifact))
        browser.close()
    assert errors == [] and outside == [], (errors, outside)
    return checked
