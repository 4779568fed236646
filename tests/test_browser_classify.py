"""The classification tab in a real browser: upload a photo, get top-5 labels and a heat map."""
from pathlib import Path

import pytest

import weights
from conftest import save_screenshot, settle, take_snapshot
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
    filled = [panel.locator(f"#classify-heat-{name} img").count() for name in tab.MODELS.values()]
    assert filled == [1, 1, 1]  # "Compare all": every model's heat map
    assert not page.locator(".toast-body.error").count()
    save_screenshot(page, "classify")


def test_example_click_classifies_with_the_chosen_settings(page, open_tab):
    """Clicking an example runs the models at once, with the model and framing the user already chose."""
    panel = open_tab("classify")
    panel.get_by_label("ViT").check()
    panel.get_by_label("Frame the subject first").uncheck()
    frog = next(i for i, p in enumerate(tab.example_paths()) if Path(p).stem == "frog")
    panel.locator(".gallery-item").nth(frog).click()  # image-only examples are a gallery of buttons
    page.wait_for_function("el => el.innerText.includes('%')", arg=panel.element_handle(), timeout=90_000)
    settle(page)
    text = panel.inner_text()
    assert "frog" in text.split("What the model sees")[-1]
    assert "Framed on" not in text and "found no animal" not in text  # framing stayed off
    assert panel.get_by_label("ViT").is_checked() and not panel.get_by_label("Frame the subject first").is_checked()
    filled = [panel.locator(f"#classify-heat-{name} img").count() for name in tab.MODELS.values()]
    assert filled == [0, 0, 1]  # only the chosen model ran
    assert not page.locator(".toast-body.error").count()


def test_unreadable_upload_is_said_once(page, open_tab, tmp_path):
    """A file that is no image gets one clear message (the photo's change event used to fail on it too: two)."""
    panel = open_tab("classify")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    panel.locator("input[type=file]").first.set_input_files(str(broken))
    page.locator(".toast-body.error").first.wait_for(timeout=60_000)
    settle(page)
    page.wait_for_timeout(1000)
    errors = [t.inner_text() for t in page.locator(".toast-body.error").all()]
    assert len(errors) == 1 and errors[0].count("Could not read the image") == 1, errors


def test_webcam_snapshot_is_classified(camera_page):
    """A picture taken with the camera (chromium's fake one, filming the cat example) is classified at once."""
    cat = next(p for p in tab.example_paths() if Path(p).stem == "cat")
    page, panel = camera_page(cat, "classify")
    take_snapshot(page, panel)
    page.wait_for_function("el => el.innerText.includes('%')", arg=panel.element_handle(), timeout=90_000)
    settle(page)
    results = panel.inner_text().split("What the model sees")[-1]
    assert "cat" in results
    assert not page.locator(".toast-body.error").count()
