"""The diffusion tab in a real browser: a stepped sample streams in, and the slider scrubs its steps."""
import pytest

import weights
from conftest import save_screenshot, set_slider_number

pytestmark = pytest.mark.skipif(not weights.available("ddpm-fashion"), reason="ddpm-fashion not trained yet")


def test_stepped_sample_and_scrubbing(page, open_tab):
    panel = open_tab("diffusion")
    set_slider_number(panel, "Steps", 20)
    set_slider_number(panel, "Number of images", 2)
    panel.get_by_role("button", name="Generate").click()
    page.wait_for_function("el => el.innerText.includes('Done:')", arg=panel.element_handle(), timeout=180_000)
    assert "20 of the 20 steps stored" in panel.inner_text()
    assert panel.locator("img").count() >= 3  # the live view, the final grid, the GIF
    assert not page.locator(".toast-body.error").count()
    # the slider jumped to the last stored step (its new range applied) before a user can scrub it
    page.wait_for_function("el => el.innerText.includes('Step 20 of 20')", arg=panel.element_handle(),
                           timeout=60_000)

    set_slider_number(panel, "Show step", 6)
    page.wait_for_function("el => el.innerText.includes('Step 6 of 20')", arg=panel.element_handle(),
                           timeout=60_000)
    set_slider_number(panel, "Show step", 19)
    page.wait_for_function("el => el.innerText.includes('Step 19 of 20')", arg=panel.element_handle(),
                           timeout=60_000)
    # typed key by key, each keystroke scrubs (9, then 99: the last step), none refused and the last not dropped
    box = panel.get_by_role("spinbutton", name="number input for Show step")
    box.fill("")
    box.press_sequentially("99", delay=50)
    box.press("Tab")
    page.wait_for_function("el => el.innerText.includes('Step 20 of 20')", arg=panel.element_handle(),
                           timeout=60_000)
    assert box.input_value() == "20"
    assert not page.locator(".toast-body.error").count()
    save_screenshot(page, "diffusion")


def test_stop_says_so_and_clears_the_previous_run(page, open_tab):
    panel = open_tab("diffusion")
    set_slider_number(panel, "Steps", 10)
    set_slider_number(panel, "Number of images", 1)
    panel.get_by_role("button", name="Generate").click()
    page.wait_for_function("el => el.innerText.includes('Done:')", arg=panel.element_handle(), timeout=180_000)
    page.wait_for_function("el => el.innerText.includes('Step 10 of 10')", arg=panel.element_handle(),
                           timeout=60_000)
    panel.get_by_role("radio", name="DDPM").check()
    set_slider_number(panel, "Steps", 1000)
    panel.get_by_role("button", name="Generate").click()
    page.wait_for_function("el => el.innerText.includes('Sampling: step')", arg=panel.element_handle(),
                           timeout=60_000)
    panel.get_by_role("button", name="Stop").click()
    page.wait_for_function("el => el.innerText.includes('Stopped.')", arg=panel.element_handle(), timeout=30_000)
    text = panel.inner_text()
    assert "Step 10 of 10" not in text and "Done:" not in text  # nothing of the first run is left to mix up
    assert not page.locator(".toast-body.error").count()
