"""A real browser (Debian's chromium, headless, driven by Playwright) opens every tab of the app served by
a subprocess, checks it rendered, and saves ``docs/screenshots/<tab>.png`` (the README shows them)."""
from __future__ import annotations

import importlib
from pathlib import Path

import demos
from conftest import settle

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def test_every_tab_renders_and_is_screenshotted(page, open_tab):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
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
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


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
