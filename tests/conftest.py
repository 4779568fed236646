"""Shared fixtures: a registry pointed at a temporary folder, and the real app served by a subprocess
(started once per session for the end-to-end and browser tests)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import pytest

from bench.common import AppStartError, app_server, free_port  # noqa: F401 (free_port: used by test_torchrun)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"  # logs of the app subprocesses (git-ignored)
# Where the browser tests save each tab's picture: the git-ignored artifacts folder, so running the tests
# leaves a clone clean; `SCREENSHOTS_DIR=docs/screenshots python -m pytest tests/test_browser*.py` retakes the
# README's pictures.
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS_DIR") or ARTIFACTS / "screenshots").resolve()
APP_START_TIMEOUT = 180  # seconds; importing torch + gradio and building every tab on a busy 2-core box


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """``weights`` with WEIGHTS_DIR at tmp_path, only the TinyNet model registered, and an empty cache."""
    import weights
    from toys import tiny_spec
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(weights, "MODELS", {"tiny": tiny_spec()})
    monkeypatch.setattr(weights, "_cache", {})
    monkeypatch.delenv(weights.HUB_ORG_ENV, raising=False)
    return weights


@contextlib.contextmanager
def serve_app(name: str = "app", env: dict[str, str] | None = None) -> Iterator[str]:
    """``python app.py --port P`` on 127.0.0.1 in a subprocess; yields its URL once it answers HTTP."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with app_server(ARTIFACTS / f"{name}.log", env, APP_START_TIMEOUT) as (url, _):
            yield url
    except AppStartError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def app_url() -> Iterator[str]:
    """The real app with the shipped weights, started once for the e2e and browser tests."""
    with serve_app("app") as url:
        yield url


CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium, headless, driven by Playwright (no downloaded browser)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open_app(browser, app_url: str, **context_options):
    """A new page of ``browser`` (in a context of its own) with the app loaded, 1400x1000 unless
    ``context_options`` say otherwise."""
    pg = browser.new_context(**{"viewport": {"width": 1400, "height": 1000}, **context_options}).new_page()
    pg.set_default_timeout(60_000)
    _track_requests(pg)
    pg.goto(app_url, wait_until="load")
    settle(pg)
    pg.wait_for_selector("[role=tab]")
    return pg


@pytest.fixture
def page(browser, app_url):
    """A fresh browser page with the app loaded."""
    pg = _open_app(browser, app_url)
    yield pg
    pg.context.close()


def save_screenshot(page, name: str) -> None:
    """The whole page as ``SCREENSHOTS/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _track_requests(page) -> None:
    page._zoo_pending = set()
    page.on("request", lambda r: page._zoo_pending.add(r))
    page.on("requestfinished", lambda r: page._zoo_pending.discard(r))
    page.on("requestfailed", lambda r: page._zoo_pending.discard(r))


def set_slider_number(panel, label: str, value: float) -> None:
    """Type ``value`` into the number box of the slider labelled ``label`` (what a user can do too)."""
    box = panel.get_by_role("spinbutton", name=f"number input for {label}")
    box.fill(str(value))
    box.press("Enter")


def settle(page, quiet_ms: int = 500, timeout_ms: int = 60_000) -> None:
    """Wait until no request has been in flight for ``quiet_ms``: Playwright's "networkidle", except that
    gradio's heartbeat stream (open for the whole visit when a tab has gr.State) does not count."""
    quiet = 0
    for _ in range(timeout_ms // 100):
        busy = [r for r in page._zoo_pending if "/heartbeat/" not in r.url]
        quiet = 0 if busy else quiet + 100
        if quiet >= quiet_ms:
            return
        page.wait_for_timeout(100)
    raise TimeoutError(f"requests still in flight after {timeout_ms} ms: {[r.url for r in busy][:5]}")


def _open_tab(page, name: str):
    """Select the tab with id ``name`` (also when Gradio folded it into the "More tabs" menu); return the
    visible tab panel."""
    button = page.locator(f'button[role=tab][data-tab-id="{name}"]')
    if button.count() and button.first.is_visible():
        button.first.click()
    else:
        import importlib
        label = importlib.import_module(f"demos.{name}").TITLE
        page.locator('button[aria-label="More tabs"]').click()
        page.locator(".overflow-dropdown button", has_text=label).first.click()
    panel = page.locator("[role=tabpanel]:visible").first
    panel.wait_for(state="visible")
    settle(page)
    return panel


@pytest.fixture
def open_tab(page):
    """``open_tab("about")`` selects that tab in ``page`` and returns its visible panel (a Locator), so a
    tab's own browser test is: ``panel = open_tab("mytab"); panel.get_by_role("button", ...).click()``."""
    return lambda name: _open_tab(page, name)


def write_y4m(photo: str, path: Path, frames: int = 10) -> None:
    """``photo`` as a video in the YUV4MPEG2 format chromium's fake camera plays (4:2:0, 5 frames a second,
    looped), each frame shifted 4 pixels further right so that successive frames differ."""
    import numpy as np
    from PIL import Image
    ycc = np.asarray(Image.open(photo).convert("RGB").convert("YCbCr"))
    h, w = ycc.shape[0] // 2 * 2, ycc.shape[1] // 2 * 2
    video = [f"YUV4MPEG2 W{w} H{h} F5:1 Ip A1:1 C420jpeg\n".encode()]
    for i in range(frames):
        shifted = np.roll(ycc[:h, :w], 4 * i, axis=1)
        planes = [shifted[..., 0], shifted[::2, ::2, 1], shifted[::2, ::2, 2]]
        video.append(b"FRAME\n" + b"".join(np.ascontiguousarray(p).tobytes() for p in planes))
    path.write_bytes(b"".join(video))


@pytest.fixture
def camera_page(browser, app_url, tmp_path):
    """``page, panel = camera_page(photo, tab)``: the app open on ``tab`` in a second chromium whose camera
    films ``photo`` (chromium's fake camera, permission granted)."""
    browsers = []

    def open_with_camera(photo: str, tab: str):
        video = tmp_path / f"{Path(photo).stem}.y4m"
        write_y4m(photo, video)
        camera_browser = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=[
            *CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}"])
        browsers.append(camera_browser)
        pg = _open_app(camera_browser, app_url, permissions=["camera"])
        return pg, _open_tab(pg, tab)

    yield open_with_camera
    for b in browsers:
        b.close()


def wait_for_video(page, panel) -> None:
    """Until the panel's camera view plays frames (a capture before that would be blank)."""
    playing = "el => [...el.querySelectorAll('video')].some(v => v.readyState >= 2 && v.videoWidth > 0)"
    page.wait_for_function(playing, arg=panel.element_handle(), timeout=30_000)


def take_snapshot(page, panel) -> None:
    """Switch the panel's first image input to its camera and take a picture (as a user does)."""
    panel.get_by_role("button", name="Capture from camera").first.click()
    panel.get_by_role("button", name="Click to Access Webcam").first.click()
    wait_for_video(page, panel)
    panel.get_by_role("button", name="capture photo").first.click()
