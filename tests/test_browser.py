"""The web app in a real browser: headless Chromium (Debian's ``chromium`` package, never a
Playwright download) driven by Playwright through pytest-playwright's fixtures. One server
(random gpen-tiny-32 weights, CPU) for the module."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("playwright", reason="playwright is not installed (pip install playwright)")
pytest.importorskip("pytest_playwright", reason="pytest-playwright is not installed")

from playwright.sync_api import Page, expect

from .test_serve import face_photo, start_server

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("GPEN_CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 60_000  # a restore on a busy 2-core CPU


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright's launch arguments with Debian's Chromium (``apt-get install -y
    chromium``): ``playwright install`` downloads browsers, which this project never does."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium (or set GPEN_CHROMIUM)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM}


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    stage = start_server(tmp_path_factory.mktemp("serve"))
    yield stage.url
    stage.close()


@pytest.fixture
def app(page: Page, url: str) -> Page:
    """The page loaded, with every request it makes outside the server recorded in
    ``page.outside`` (there must be none: no CDN, fonts or analytics)."""
    page.outside = []
    host = re.match(r"https?://[^/]+", url).group(0)
    page.on("request", lambda r: None if r.url.startswith(host) else page.outside.append(r.url))
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    expect(page.locator("#restore-photo")).to_be_visible()
    return page


def restore(page: Page, photo: Path) -> np.ndarray:
    """Upload ``photo``, press Restore, wait for a new result; the restored PNG's pixels."""
    link = page.locator("#photo-file a[download]")
    old = link.get_attribute("href") if link.count() else None
    page.locator("#photo-in input[type=file]").set_input_files(photo)
    expect(page.locator("#photo-in img")).to_be_visible()
    page.locator("#restore-photo").click()
    expect(link).to_have_attribute("href", re.compile(".+"))
    if old is not None:
        expect(link).not_to_have_attribute("href", old)
    expect(page.locator("#photo-out img").first).to_be_visible()
    body = page.request.get(link.get_attribute("href")).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def test_page_loads_with_its_controls_and_fetches_nothing_outside(app):
    expect(app).to_have_title("GPEN face restoration")
    expect(app.locator("#random-weights")).to_contain_text("RANDOM weights")
    expect(app.locator("#model-info")).to_contain_text("restores 32 px faces")
    for label in ("Fidelity", "Upscale", "Only the centre face", "Paste mask", "Network"):
        expect(app.get_by_text(label).first).to_be_visible()
    assert app.outside == []


def test_upload_restore_then_lower_fidelity_changes_the_output(app, tmp_path):
    photo = face_photo(tmp_path / "portrait.png")
    source = np.asarray(Image.open(photo)).astype(np.float64)
    restored = restore(app, photo)
    assert restored.shape == source.shape
    expect(app.locator("#photo-notes")).to_contain_text("1 face(s) restored")
    before_srcs = [i.get_attribute("src") for i in app.locator("#photo-out img").all()]
    # move the fidelity slider to 0 (keyboard on the range input) and restore again
    fidelity = app.get_by_label("range slider for Fidelity")
    fidelity.focus()
    fidelity.press("Home")
    expect(app.get_by_label("number input for Fidelity")).to_have_value("0")
    original = restore(app, photo)
    after_srcs = [i.get_attribute("src") for i in app.locator("#photo-out img").all()]
    assert after_srcs != before_srcs  # the slider shows the new result
    # alpha=0 pastes the input's own crop back: far closer to the input than alpha=1's noise
    d0, d1 = (np.abs(x - source).mean() for x in (original, restored))
    assert d0 < d1 / 3, (d0, d1)
    assert app.outside == []


def test_a_non_image_shows_a_readable_error(app, tmp_path):
    bad = tmp_path / "holiday.png"
    bad.write_text("this is not an image")
    app.locator("#photo-in input[type=file]").set_input_files(bad)
    app.locator("#restore-photo").click()
    expect(app.get_by_text("not an image").first).to_be_visible()
    # and the page still restores the next photo
    assert restore(app, face_photo(tmp_path / "ok.png")).shape == (240, 320, 3)
