"""The detection tab in a real browser: an example photo gets boxes with labels and a count per class;
a high threshold on a photo without VOC objects says nothing was detected; a webcam (chromium's fake camera
playing an example photo) gets boxes from a snapshot and from the live stream."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import weights
from conftest import CHROMIUM, CHROMIUM_ARGS, _open_tab, _track_requests, save_screenshot, set_slider_number
from demos import detect as tab

pytestmark = pytest.mark.skipif(not weights.available("yolo-voc"), reason="yolo-voc not trained yet")
SCORE = 0.2


def test_boxes_on_an_example_photo(page, open_tab):
    panel = open_tab("detect")
    example = next(p for p in tab.example_paths() if Path(p).stem == "astronaut")
    set_slider_number(panel, "Score threshold", SCORE)
    panel.locator("input[type=file]").first.set_input_files(example)  # the change event detects at once
    page.wait_for_function("el => /\\d+ objects? above a score of 0.20/.test(el.innerText)",
                           arg=panel.element_handle(), timeout=90_000)
    page.wait_for_timeout(1000)
    _, rows, _ = tab.detect_objects(example, SCORE, 0.5)  # the same function in this process
    assert rows, "the shipped detector finds nothing on astronaut.jpg at this threshold"
    table = panel.inner_text().split("Objects per class")[-1].split("Examples")[0]  # the count table
    for name, count, _ in rows:
        assert name in table
    detections = panel.locator("img").nth(1)  # the upload preview, then the annotated image
    detections.wait_for(state="visible")
    assert detections.evaluate("img => img.naturalWidth") > 0
    assert not page.locator(".toast-body.error").count()
    save_screenshot(page, "detect")

    set_slider_number(panel, "Score threshold", 0.95)
    coffee = next(p for p in tab.example_paths() if Path(p).stem == "coffee")  # no VOC class in it
    assert not tab.detect_objects(coffee, 0.95, 0.5)[1]
    panel.locator("input[type=file]").first.set_input_files(coffee)
    page.wait_for_function("el => el.innerText.includes('Nothing detected')", arg=panel.element_handle(),
                           timeout=90_000)
    assert not page.locator(".toast-body.error").count()


def write_y4m(photo: str, path: Path, frames: int = 10) -> None:
    """``photo`` as a video in the YUV4MPEG2 format chromium's fake camera plays (4:2:0, 5 frames a second,
    looped), each frame shifted 4 pixels further right so that successive frames differ."""
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
    """The app in a second chromium whose camera films astronaut.jpg (camera permission granted)."""
    video = tmp_path / "astronaut.y4m"
    write_y4m(next(p for p in tab.example_paths() if Path(p).stem == "astronaut"), video)
    camera_browser = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=[
        *CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}"])
    try:
        page = camera_browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"]).new_page()
        page.set_default_timeout(60_000)
        _track_requests(page)
        page.goto(app_url, wait_until="load")
        page.wait_for_selector("[role=tab]")
        yield page
    finally:
        camera_browser.close()


def wait_for_video(page, panel) -> None:
    """Until the panel's camera view plays frames (a capture before that would be blank)."""
    page.wait_for_function("el => [...el.querySelectorAll('video')].some(v => v.readyState >= 2 && v.videoWidth > 0)",
                           arg=panel.element_handle(), timeout=30_000)


def test_webcam_snapshot_and_live_stream(camera_page):
    page = camera_page
    panel = _open_tab(page, "detect")
    # a snapshot from the camera is a photo like any other: detected as soon as it is taken
    panel.get_by_role("button", name="Capture from camera").click()
    panel.get_by_role("button", name="Click to Access Webcam").first.click()
    wait_for_video(page, panel)
    panel.get_by_role("button", name="capture photo").first.click()
    page.wait_for_function("el => /\\d+ objects? above a score of 0.30/.test(el.innerText)",
                           arg=panel.element_handle(), timeout=90_000)
    assert "person" in panel.inner_text().split("Objects per class")[-1]

    # live: frames stream in and come back with their boxes until Stop
    panel.get_by_role("button", name="Live webcam").click()
    panel.get_by_role("button", name="Click to Access Webcam").click()
    wait_for_video(page, panel)
    panel.get_by_role("button", name="capture photo").last.click()
    status = "el => / ms for this frame/.test(el.innerText)"
    page.wait_for_function(status, arg=panel.element_handle(), timeout=90_000)
    live = panel.inner_text().split("Live detections")[-1]
    assert "person x" in live, live
    live_image = panel.locator("img").last
    assert live_image.evaluate("img => img.naturalWidth") > 0
    first = live_image.get_attribute("src")
    page.wait_for_function("([img, src]) => img.getAttribute('src') !== src",
                           arg=[live_image.element_handle(), first], timeout=30_000)  # a later frame arrived
    panel.locator("button", has_text="Stop").last.click()
    page.wait_for_timeout(1000)
    stopped = live_image.get_attribute("src")
    page.wait_for_timeout(2000)
    assert live_image.get_attribute("src") == stopped, "frames still arrive after Stop"
    assert not page.locator(".toast-body.error").count()
