"""Draw the Classification tab's example pictures (simple synthetic scenes; no dataset images).

    python demos/examples/classify/make_examples.py
Some are saved in other modes (RGBA, grayscale, palette) to show the tab converts them."""
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
S = 256


def gradient(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    im = Image.new("RGB", (S, S))
    d = ImageDraw.Draw(im)
    for y in range(S):
        t = y / (S - 1)
        d.line([(0, y), (S, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    return im


def ship() -> Image.Image:
    im = gradient((120, 170, 230), (200, 220, 240))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 150, S, S], fill=(30, 70, 130))
    d.polygon([(40, 140), (220, 140), (195, 175), (65, 175)], fill=(70, 70, 80))
    d.rectangle([90, 105, 170, 140], fill=(235, 235, 235))
    d.rectangle([140, 80, 155, 105], fill=(180, 40, 40))
    return im


def airplane() -> Image.Image:
    im = gradient((60, 120, 210), (170, 205, 240))
    d = ImageDraw.Draw(im)
    d.ellipse([40, 115, 220, 140], fill=(230, 230, 235))
    d.polygon([(110, 125), (150, 125), (100, 60), (88, 60)], fill=(210, 210, 220))
    d.polygon([(110, 130), (150, 130), (100, 195), (88, 195)], fill=(210, 210, 220))
    d.polygon([(45, 125), (60, 125), (45, 95), (35, 95)], fill=(200, 200, 210))
    return im.convert("RGBA")  # saved with an alpha channel


def car() -> Image.Image:
    im = gradient((150, 190, 230), (220, 225, 230))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 170, S, S], fill=(90, 90, 95))
    d.rounded_rectangle([30, 120, 226, 180], radius=15, fill=(200, 30, 30))
    d.polygon([(70, 120), (95, 85), (170, 85), (195, 120)], fill=(190, 25, 25))
    d.polygon([(80, 118), (100, 92), (130, 92), (130, 118)], fill=(170, 210, 240))
    d.polygon([(136, 118), (136, 92), (165, 92), (185, 118)], fill=(170, 210, 240))
    for cx in (75, 185):
        d.ellipse([cx - 22, 160, cx + 22, 204], fill=(20, 20, 20))
        d.ellipse([cx - 9, 173, cx + 9, 191], fill=(160, 160, 160))
    return im


def frog() -> Image.Image:
    im = Image.new("RGB", (S, S), (60, 110, 50))
    d = ImageDraw.Draw(im)
    d.ellipse([20, 150, 240, 250], fill=(40, 90, 40))
    d.ellipse([60, 100, 200, 200], fill=(110, 170, 60))
    for cx in (95, 165):
        d.ellipse([cx - 20, 80, cx + 20, 120], fill=(110, 170, 60))
        d.ellipse([cx - 9, 90, cx + 9, 108], fill=(20, 20, 20))
    d.arc([95, 140, 165, 175], 10, 170, fill=(40, 60, 30), width=3)
    return im.filter(ImageFilter.GaussianBlur(1)).quantize(64)  # palette image


def deer() -> Image.Image:
    im = gradient((170, 200, 150), (90, 130, 60))
    d = ImageDraw.Draw(im)
    d.ellipse([70, 110, 190, 165], fill=(150, 100, 55))
    for x in (85, 105, 155, 175):
        d.rectangle([x, 150, x + 9, 220], fill=(130, 85, 45))
    d.polygon([(170, 125), (185, 70), (205, 70), (195, 130)], fill=(150, 100, 55))
    d.ellipse([180, 55, 222, 85], fill=(150, 100, 55))
    d.line([(190, 58), (180, 25), (170, 15)], fill=(90, 60, 30), width=4)
    d.line([(205, 58), (215, 25), (228, 15)], fill=(90, 60, 30), width=4)
    return im.convert("L")  # grayscale


if __name__ == "__main__":
    for name, draw in [("ship", ship), ("airplane", airplane), ("automobile", car), ("frog", frog),
                       ("deer", deer)]:
        draw().save(HERE / f"{name}.png", optimize=True)
        print(HERE / f"{name}.png")
