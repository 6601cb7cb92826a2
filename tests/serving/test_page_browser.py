"""The page in a real headless Chromium (Playwright driving Debian's /usr/bin/chromium).

Uploads a fundus photo and an OCT scan from the synthetic data, waits for the results,
checks the table, the advice, the model versions and both Grad-CAM overlays, drives the
form from the keyboard, and saves a screenshot at 1024 px wide.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retina_core.catalog.registry import champion
from tests.fusion.world import World
from tests.serving.conftest import eyes

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT_DIR_ENV = "RETINA_TEST_SCREENSHOTS"
"""Where to copy the screenshot for people to look at (besides the test's own tmp dir)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: install chromium (.ci/run does)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_page_shows_both_overlays_the_advice_and_the_versions(
    browser: Any, live_url: str, serve_world: World, tmp_path: Path
) -> None:
    eye = eyes(serve_world, 1)[0]
    page = browser.new_page(viewport={"width": 1024, "height": 900})
    outside: list[str] = []
    page.on(
        "request",
        lambda r: None if r.url.startswith(live_url) or r.url.startswith("blob:") else outside.append(r.url),
    )
    page.goto(live_url + "/")
    assert "Research use only" in page.inner_text(".banner")
    page.wait_for_selector(".card-link")  # the models' test metrics are listed before any upload

    page.set_input_files("#fundus", str(eye.fundus_path))
    page.set_input_files("#oct", str(eye.oct_path))
    page.focus("#token")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "submit"  # the form is usable from the keyboard
    page.keyboard.press("Enter")

    page.wait_for_selector("#results:not([hidden])", timeout=60_000)
    for overlay in ("#fundus-overlay", "#oct-overlay"):
        page.wait_for_function(
            f"() => {{ const i = document.querySelector('{overlay}'); return i && i.complete && i.naturalWidth > 0; }}",
            timeout=30_000,
        )
    table = page.inner_text("#prob-table")
    for finding in (
        "No DR",
        "Proliferative",
        "referable DR",
        "CNV",
        "NORMAL",
        "urgent OCT referral",
        "fusion: both",
        "DR grade (both):",
        "OCT class (both):",
    ):
        assert finding in table
    share = page.inner_text("#fusion-share")  # next to the fused result, plain text
    fundus_pct, oct_pct = (
        int(p) for p in re.fullmatch(r"fundus (\d+)% · OCT (\d+)% of the fused decision", share).groups()
    )  # type: ignore[union-attr]
    assert 99 <= fundus_pct + oct_pct <= 101
    assert page.inner_text("#referral").strip()
    versions = page.inner_text("#versions")
    for name in ("fundus_cnn", "oct_cnn", "fusion_head", "fusion_multitask"):
        version = champion(serve_world.engine, name)
        assert version is not None and f"{name} v{version.version}" in versions
    metrics = page.inner_text("#models-body")
    assert "QWK" in metrics and "[" in metrics  # test metrics with their intervals

    shot = page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert shot.startswith(b"\x89PNG")
    if target := os.environ.get(SCREENSHOT_DIR_ENV):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "page.png", Path(target) / "serving-page.png")
    page.click(".card-link")
    page.wait_for_selector("#card:not([hidden])")
    assert "# Model card:" in page.inner_text("#card")
    assert (
        page.evaluate("document.documentElement.scrollWidth") <= 1024
    )  # readable at 1024 px: no sideways scroll
    page.goto(live_url + "/docs")  # the OpenAPI page renders from the app's own files too
    page.get_by_text("/v1/predict", exact=True).first.wait_for(timeout=30_000)
    assert outside == []  # works offline: nothing fetched from anywhere else

    page.close()
