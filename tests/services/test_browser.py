"""The dashboard in a real browser: headless Debian Chromium (/usr/bin/chromium) driven by Playwright,
against a uvicorn server on 127.0.0.1 serving a store seeded through the store API (tests/conftest.py).

Curves of two settings render, switching the x-axis redraws them, where the budget went is drawn, and a
run named like a script tag shows as text (no dialog opens, no console error). The compare page's
screenshot is written to docs/compare.png, the one docs/guide.md shows.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.services

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "compare.png"
XSS = "<script>alert(1)</script>"
SIX_RUNS = "&".join(f"run=run-{a}-{s}" for a in ("uniform", "gvm") for s in range(3))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, seeded: Callable[[str], Any]) -> Iterator[str]:
    """The dashboard over a seeded SQLite store, served by uvicorn in a thread; its base URL."""
    import uvicorn

    from dibs.dashboards.app import create_app

    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'dibs.db'}"
    seeded(url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(create_app(url), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started, "uvicorn did not start within 30 s"
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip(
            f"{CHROMIUM} not found: apt-get install chromium chromium-driver (make test-services does)"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page that records dialogs and console errors, for the test to check at its end."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    opened = context.new_page()
    opened.dialogs, opened.errors = [], []
    opened.on("dialog", lambda dialog: (opened.dialogs.append(dialog.message), dialog.dismiss()))
    opened.on("console", lambda msg: opened.errors.append(msg.text) if msg.type == "error" else None)
    opened.on("pageerror", lambda exc: opened.errors.append(str(exc)))
    yield opened
    context.close()


def _drawn(page: Any, times: int) -> None:
    page.wait_for_selector(f'#curves[data-drawn="{times}"]', timeout=30_000)


def test_curves_render_and_switching_the_x_axis_redraws_them(server, page):
    page.goto(f"{server}/compare?{SIX_RUNS}&metric=eval/accuracy&x=step")
    _drawn(page, 1)
    legend = page.locator("#curves .legendtext").all_text_contents()
    assert legend == [
        "grpo/uniform k=8 T=1.0 (mean of 3 seeds, 95% CI)",
        "grpo/gvm k=8 T=1.0 (mean of 3 seeds, 95% CI)",
    ]
    # Two mean lines with markers and two bands, drawn as SVG paths.
    assert page.locator("#curves .scatterlayer .trace").count() == 4
    assert page.locator("#curves .scatterlayer .trace .js-line").count() == 4
    assert page.eval_on_selector("#curves", "el => el.data[1].x") == [0, 10, 20, 30, 40, 50]
    assert page.locator("#curves .g-xtitle").text_content() == "step"

    page.select_option("#x", "rollouts_consumed")
    _drawn(page, 2)
    assert page.locator("#curves .g-xtitle").text_content() == "rollouts consumed (probe included)"
    assert page.eval_on_selector("#curves", "el => el.data[1].x") == [0, 1280, 2560, 3840, 5120, 6400]
    assert page.eval_on_selector("#curves", "el => el.data[3].x.at(-1)") == 9600  # gvm pays for its probe
    assert "x=rollouts_consumed" in page.url  # the view is a link that can be shared

    page.fill("#target", "0.45")
    page.click("#target-form button")
    page.wait_for_selector("#targets tbody tr:nth-child(2)")
    rows = page.locator("#targets tbody tr").all_inner_texts()
    assert rows[0].split("\t")[2:4] == ["3/3", "5547 ± 1836"]
    # Where the budget went, against the pooled pass rate (this store has no pre-pass): gvm-0's 40 prompts
    # (8 a step, ids differ by step) but the 7 that never got a rollout (n_alloc = i * step % 9 = 0).
    page.wait_for_selector('#spread[data-drawn="1"]', timeout=30_000)
    assert page.eval_on_selector("#spread", "el => el.layout.meta.reference") == "pooled"
    assert page.eval_on_selector("#spread", "el => el.data.map((t) => t.x.length)") == [0, 10, 33, 10]
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert page.dialogs == [] and page.errors == []


def test_a_run_named_like_a_script_shows_as_text(server, page):
    page.goto(f"{server}/")
    assert page.locator("#runs td.name a", has_text=XSS).count() == 1
    assert page.locator("#runs td.name a", has_text=XSS).text_content() == XSS
    page.goto(f"{server}/compare?run=run-xss")
    _drawn(page, 1)
    assert page.locator("#picked td.name a").text_content() == XSS
    page.goto(f"{server}/run/run-xss")
    assert page.locator("#run-name").text_content() == XSS
    assert page.locator("script:not([src])").count() == 0
    assert page.dialogs == [] and page.errors == []
