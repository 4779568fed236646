"""The detection tab in a real browser: an example photo gets boxes with labels and a count per class;
a high threshold on a photo without VOC objects says nothing was detected."""
from pathlib import Path

import pytest

import weights
from conftest import save_screenshot, set_slider_number
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
