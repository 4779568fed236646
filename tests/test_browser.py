"""A real browser (Debian's chromium, headless, driven by Playwright) opens every tab of the app served by
a subprocess, checks it rendered, and saves a picture of each in ``conftest.SCREENSHOTS``
(``SCREENSHOTS_DIR=docs/screenshots`` retakes the README's)."""
from __future__ import annotations

import importlib

import demos
from conftest import _open_app, _open_tab, save_screenshot, settle


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


def test_phone_shows_every_tab_and_examples_before_results(browser, app_url):
    """On a 390x844 phone screen every tab's name is on the page (wrapped onto rows, not hidden behind a
    "More tabs" menu), and a photo tab's examples come right under the photo box, above the results."""
    page = _open_app(browser, app_url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        for name in demos.TABS:
            button = page.locator(f'button[role=tab][data-tab-id="{name}"]')
            assert button.is_visible(), f"the {name!r} tab is not on a phone's screen"
            box = button.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (name, box)
        assert not page.locator('button[aria-label="More tabs"]').is_visible()
        for name, result in (("classify", "#classify-heat-compact-cifar10"), ("caption", "#caption-heat"),
                             ("detect", "#detect-annotated")):
            panel = _open_tab(page, name)
            photo = panel.locator("[data-testid=block-label]", has_text="Image" if name != "detect" else "Photo")
            examples = panel.locator(".gallery-item").first
            output = panel.locator(result)  # one of the results
            ys = [loc.bounding_box()["y"] for loc in (photo.first, examples, output)]
            assert ys == sorted(ys), f"{name}: photo, examples and results at y = {ys}"
            save_screenshot(page, f"phone-{name}")
    finally:
        page.context.close()
