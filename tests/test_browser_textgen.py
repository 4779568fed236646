"""The text-generation tab in a real browser: text streams into the output box, and scoring works."""
import pytest

import weights
from conftest import save_screenshot, set_slider_number
from demos import textgen as tab

pytestmark = pytest.mark.skipif(not any(map(weights.available, tab.MODELS.values())),
                                reason="neither GPT nor LSTM weights trained yet")


def test_generation_streams_in_the_browser(page, open_tab):
    panel = open_tab("textgen")
    panel.get_by_label("Prompt").fill("ROMEO:\n")
    set_slider_number(panel, "New characters", 600)
    panel.get_by_role("button", name="Generate").click()
    output = panel.get_by_label("Generated text")
    # Streaming: the box shows the prompt plus *some* text before generation is finished ...
    page.wait_for_function("el => el.value.length > 20", arg=output.element_handle(), timeout=60_000)
    first = len(output.input_value())
    page.wait_for_function("el => el.value.length >= 7 + 600", arg=output.element_handle(), timeout=120_000)
    final = output.input_value()
    assert first < len(final) and final.startswith("ROMEO:\n")

    panel.get_by_role("button", name="Score text").click()
    page.wait_for_selector("text=Perplexity", timeout=60_000)
    assert "bits per character" in panel.inner_text()
    # the tab's CSS reached the page: the scored characters flow as text, without gaps (see textgen.CSS)
    assert page.eval_on_selector("#surprisal .token", "el => getComputedStyle(el).fontSize") == "0px"
    save_screenshot(page, "textgen")  # the generated text and the scored one
