"""The captioning tab in a real browser: upload a photo, read the caption and the beams, click a word
and get its attention map."""
from pathlib import Path

import pytest

import weights
from conftest import save_screenshot, set_slider_number, settle, take_snapshot
from demos import caption as tab

pytestmark = pytest.mark.skipif(not weights.available(tab.NAME), reason="captioner not trained yet")


def test_upload_caption_beams_and_word_attention(page, open_tab):
    panel = open_tab("caption")
    example = next(p for p in tab.example_paths() if Path(p).stem == "cat")
    panel.locator("input[type=file]").first.set_input_files(example)  # triggers the upload event
    caption_box = panel.get_by_label("Caption")
    page.wait_for_function("el => el.value.length > 3", arg=caption_box.element_handle(), timeout=90_000)
    page.wait_for_timeout(1500)
    shown = caption_box.input_value()
    expected = tab.caption(example, 3)[0]  # the same function in this process
    assert shown == expected and shown.endswith(".")
    text = panel.inner_text()
    assert "log-prob" in text and expected.rstrip(".").lower() in text.lower()  # the beams table
    words = panel.get_by_role("radio")
    assert words.count() == len(expected.split()) + 1  # every word and <end>
    heat = panel.locator("#caption-heat")
    before = heat.locator("img").first.get_attribute("src")
    words.nth(1).check()  # the second word: its heat map replaces the first word's
    page.wait_for_function(
        "([el, src]) => { const i = el.querySelector('img'); return i && i.getAttribute('src') !== src; }",
        arg=[heat.element_handle(), before], timeout=30_000)
    assert not page.locator(".toast-body.error").count()
    save_screenshot(page, "caption")


def test_example_click_captions_with_the_chosen_beam(page, open_tab):
    """Clicking an example captions it at once, with the beam size the user already set."""
    panel = open_tab("caption")
    set_slider_number(panel, "Beam size (1 = greedy)", 1)
    paths = tab.example_paths()
    panel.locator(".gallery-item").first.click()  # image-only examples are a gallery of buttons
    caption_box = panel.get_by_label("Caption")
    page.wait_for_function("el => el.value.length > 3", arg=caption_box.element_handle(), timeout=90_000)
    settle(page)
    assert caption_box.input_value() == tab.caption(paths[0], 1)[0] != tab.caption(paths[0], 3)[0]  # greedy, as set
    assert not page.locator(".toast-body.error").count()


def test_webcam_snapshot_is_captioned(camera_page):
    """A picture taken with the camera (chromium's fake one, filming the cat example) is captioned at once."""
    page, panel = camera_page(next(p for p in tab.example_paths() if Path(p).stem == "cat"), "caption")
    take_snapshot(page, panel)
    caption_box = panel.get_by_label("Caption")
    page.wait_for_function("el => el.value.length > 3", arg=caption_box.element_handle(), timeout=90_000)
    settle(page)
    shown = caption_box.input_value()
    assert shown.endswith(".") and len(shown.split()) >= 3
    assert panel.get_by_role("radio").count() == len(shown.split()) + 1  # its words, for the attention maps
    assert not page.locator(".toast-body.error").count()
