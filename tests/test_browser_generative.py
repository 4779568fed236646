"""The generative tab in a real browser: draw on the sketchpad and get the VAE's reconstruction, sample a grid,
interpolate between two seeds, and click the 2-d latent map."""
import pytest

import weights
from conftest import save_screenshot

pytestmark = pytest.mark.skipif(not weights.available("vae-fashion"), reason="VAE weights not trained yet")


def wait_for_image(page, elem_id: str, timeout: int = 90_000) -> None:
    page.wait_for_selector(f"#{elem_id} img", state="visible", timeout=timeout)


def test_sketch_reconstruction_and_interpolation(page, open_tab):
    panel = open_tab("generative")
    page.locator("#gen-sketch").get_by_role("button", name="Brush").first.click()  # the sketchpad starts with no tool
    canvas = page.locator("#gen-sketch canvas").first
    canvas.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    box = canvas.bounding_box()
    assert box and box["width"] > 50
    # a filled trouser-like shape: two thick vertical bands joined at the top, drawn in zig-zag strokes
    left, top, w, h = box["x"] + 0.3 * box["width"], box["y"] + 0.15 * box["height"], 0.4 * box["width"], 0.7 * box["height"]
    page.mouse.move(left, top)
    page.mouse.down()
    for i in range(12):
        page.mouse.move(left + w * (i % 2), top + h * 0.02 * i, steps=8)
    page.mouse.up()
    for x0 in (left, left + 0.7 * w):
        page.mouse.move(x0, top + 0.2 * h)
        page.mouse.down()
        for i in range(8):
            page.mouse.move(x0 + 0.3 * w * (i % 2), top + 0.2 * h + 0.1 * h * i, steps=6)
        page.mouse.up()

    panel.get_by_role("button", name="Reconstruct").click()
    page.wait_for_selector("text=Latent mean", timeout=90_000)
    wait_for_image(page, "gen-recon")
    assert "nats" in panel.inner_text()

    panel.get_by_role("button", name="Interpolate").click()
    wait_for_image(page, "gen-strip")
    strip = page.locator("#gen-strip img").first.bounding_box()
    assert strip and strip["width"] > 3 * strip["height"]  # a strip of frames

    panel.get_by_role("button", name="Sample", exact=True).click()
    wait_for_image(page, "gen-samples")

    if weights.available("beta-vae-fashion"):
        image = page.locator("#gen-map img").first
        image.scroll_into_view_if_needed()
        size = image.bounding_box()
        image.click(position={"x": 0.25 * size["width"], "y": 0.5 * size["height"]})
        page.wait_for_selector("text=z = (", timeout=60_000)
        wait_for_image(page, "gen-point")
    assert not page.locator(".toast-body.error").count()
    page.wait_for_timeout(500)
    save_screenshot(page, "generative")
