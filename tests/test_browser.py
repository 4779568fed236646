"""A real browser (Debian's chromium, headless, driven by Playwright) opens every tab of the app served by
a subprocess, checks it rendered, and saves a picture of each in ``conftest.SCREENSHOTS``
(``SCREENSHOTS_DIR=docs/screenshots`` retakes the README's)."""
from __future__ import annotations

import importlib

import demos
from conftest import save_screenshot, settle


def test_every_tab_renders_and_is_screenshotted(page, open_tab):
    assert page.title() == "Model zoo"
    buttons = page.locator("button[role=tab]")
    assert buttons.count() >= len(demos.TABS)
    for name in demos.TABS:
        title = importlib.import_module(f"demos.{name}").TITLE
        panel = open_tab(name)
        selected = page.locator("button[role=tab][aria-selected=true]")
        assert selected.first.inner_text().strip() == title
        page.wait_for_timeout(500)  # let plots and tables settle before the picture
        text = panel.inner_text()
        widgets = panel.locator("button, input, textarea, img, canvas, table, svg").count()
        assert len(text.strip()) > 20 and widgets > 0, f"tab {name!r} rendered nothing: {text!r}"
        assert "This tab failed to load" not in page.content(), f"tab {name!r} failed to load"
        save_screenshot(page, name)


def test_about_tab_shows_every_model(page, open_tab):
    import weights
    panel = open_tab("about")
    text = panel.inner_text()
    for name in weights.MODELS:
        assert name in text
    assert "not trained yet" in text or all(weights.available(n) for n in weights.MODELS)
    panel.get_by_role("button", name="Refresh").click()  # the button's event answers without an error
    settle(page)
    assert not page.locator(".toast-body.error").count()
