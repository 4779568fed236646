"""The text-generation tab in a real browser: text streams into the output box, and scoring works."""
import pytest

import weights
from conftest import save_screenshot, set_slider_number, settle
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


def test_example_click_generates_with_its_settings(page, open_tab):
    """Clicking an example fills the prompt and sampling settings and generates at once, with the model the user
    chose; the result is what ``generate`` gives for those settings (a seeded sample)."""
    panel = open_tab("textgen")
    prompt, temperature, top_k, top_p, max_new, seed = tab.EXAMPLES[1]
    panel.get_by_text(prompt.split("\n")[0], exact=False).first.click()
    output = panel.get_by_label("Generated text")
    page.wait_for_function("([el, n]) => el.value.length >= n", arg=[output.element_handle(), len(prompt) + max_new],
                           timeout=120_000)
    settle(page)
    chosen = next(label for label in tab.MODELS if panel.get_by_label(label, exact=True).is_checked())
    expected = list(tab.generate(prompt, temperature, top_k, top_p, max_new, seed, chosen))[-1]
    assert output.input_value() == expected and expected.startswith(prompt)
    assert panel.get_by_label("Prompt").input_value() == prompt
    assert not page.locator(".toast-body.error").count()
