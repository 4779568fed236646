"""The classification tab in a real browser: upload a photo, get top-5 labels and a heat map."""
from pathlib import Path

import pytest

import weights
from conftest import save_screenshot
from demos import classify as tab

pytestmark = pytest.mark.skipif(not weights.available("compact-cifar10"), reason="compact weights not trained yet")


def test_upload_classify_and_explain(page, open_tab):
    panel = open_tab("classify")
    example = next(p for p in tab.example_paths() if Path(p).stem == "ship")
    panel.locator("input[type=file]").first.set_input_files(example)  # triggers the upload event
    page.wait_for_timeout(1000)
    panel.get_by_role("button", name="Classify").click()
    # gr.Label shows probabilities as percentages; nothing else in the tab does
    page.wait_for_function("el => el.innerText.includes('%')", arg=panel.element_handle(), timeout=90_000)
    page.wait_for_timeout(1500)
    text = panel.inner_text()
    top = tab.classify(example, "Compact net")[1]  # the same function in this process: its top class shows
    assert max(top, key=top.get) in text.split("What the model sees")[-1]
    assert "Frame the subject first" in text and "The detector found no animal or vehicle to frame" in text  # framing is on
    assert panel.locator("img").count() >= 3  # the input, the 32x32 preview, at least one heat map
    assert not page.locator(".toast-body.error").count()
    save_screenshot(page, "classify")
