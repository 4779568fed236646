"""Hostile inputs for the fuzz test: bad values per Gradio component, and broken or extreme image files.

Images are written without decoding them in memory: a "10000x10000" PNG is a real, valid PNG of
100 megapixels whose zlib stream of zero rows is only ~100 kB (a decompression bomb).
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

from PIL import Image

MEGABYTE = 1_000_000
UNICODE = "héllo wörld — ☃ 🤖 中文 العربية \u202eevil\u202c \u200b zero-width, tab\t, nul\x00, \udcff"
UNICODE = UNICODE.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate cannot be sent as JSON

# Values that are the wrong JSON type for almost any input ("type" cases): a clear rejection by
# Gradio's own validation is an acceptable answer to these.
WRONG_TYPES: list[Any] = [None, 12345, -1.5, True, [], [1, "a"], {}, {"a": {"b": [1]}}, "abc"]


def text_values() -> list[Any]:
    return ["", " ", "\n" * 1000, UNICODE, "ROMEO:\n" * 20, "a" * MEGABYTE, "🤖" * (MEGABYTE // 4),
            "\x00\x01\x02\x7f", "<script>alert(1)</script>", "'; DROP TABLE users; --", "%s%n{0}${x}"]


def number_values() -> list[Any]:
    return [0, -1, 1, 0.5, -0.0, 1e-300, -1e308, 1e308, 2**63, -(2**63) - 1, 2**200, 10**400]


def number_type_values() -> list[Any]:
    """Numbers as strings: the wrong JSON type for a number (the JSON spelling of nan/inf is a string too)."""
    return ["12", "1e3", "nan", "inf", "-inf", ""]


def bool_values() -> list[Any]:
    return [False, True, 0, 1, 2, "yes", "false", ""]


def choice_values(choices: list[Any]) -> list[Any]:
    first = str(choices[0]) if choices else "x"
    return ["", "no-such-choice", first.lower(), first.upper(), f" {first} ", first * 10_000, UNICODE,
            0, -1, 99999]


def multiselect_values(choices: list[Any]) -> list[Any]:
    some = [str(c) for c in choices[:3]]
    return [[], some, some * 2, ["no-such-choice"], ["0"], ["-1"], ["99999"], [UNICODE], [None], [[1]],
            [str(c) for c in choices] * 3, "1", ["1.5"], ["1e3"]]


def dataframe_values() -> list[Any]:
    return [{"headers": [], "data": []}, {"headers": ["a"], "data": [[]]},
            {"headers": ["a", "b"], "data": [["x", "abc"], [None, None]]},
            {"headers": ["a", "b"], "data": [[UNICODE, 1e308], ["y", -1], ["z", "nan"]]},
            {"headers": ["a", "b"], "data": [[str(i), i] for i in range(20_000)]},
            {"headers": ["a", "b"], "data": [[{"x": 1}, [1, 2]]]}]


def dataframe_type_values() -> list[Any]:
    """Tables that do not match Gradio's DataframeData shape (a ragged row, no rows, no headers)."""
    return [{"headers": ["a", "b"], "data": [["x"]]}, {"headers": ["a", "b"], "data": "not rows"},
            {"data": [[1, 2]]}, {"headers": ["a", "b"]}]


# --------------------------------------------------------------------------- image files

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def blank_png(width: int, height: int, path: Path) -> Path:
    """A valid 8-bit grayscale PNG of zeros, streamed row by row (never width*height bytes in memory)."""
    comp, out = zlib.compressobj(9), []
    row = b"\x00" * (width + 1)  # filter byte + pixels
    for _ in range(height):
        out.append(comp.compress(row))
    out.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(out))
                     + _png_chunk(b"IEND", b""))
    return path


def _save(image: Image.Image, path: Path, **kw: Any) -> Path:
    image.save(path, **kw)
    return path


def image_files(folder: Path) -> dict[str, Path]:
    """name -> file: broken, extreme and unusual images, each one a separate fuzz case."""
    folder.mkdir(parents=True, exist_ok=True)
    f = folder
    gradient = Image.linear_gradient("L").resize((64, 64))
    rgb = Image.merge("RGB", [gradient, gradient.rotate(90), gradient.rotate(180)])
    ok = _save(rgb, f / "ok.png")
    data = ok.read_bytes()
    frames = [Image.new("RGB", (40, 30), c) for c in ("red", "green", "blue")]
    i16 = Image.new("I;16", (48, 48))
    i16.frombytes(bytes(range(256)) * 18)
    exif = Image.Exif()
    exif[274] = 6  # orientation: rotate 90 degrees
    files = {
        "1x1": _save(Image.new("RGB", (1, 1), (200, 10, 10)), f / "1x1.png"),
        "1x4000 strip": blank_png(1, 4000, f / "strip.png"),
        "10000x10000 bomb": blank_png(10_000, 10_000, f / "bomb.png"),
        "7000x7000 (over the pixel limit, under PIL's 2x)": blank_png(7000, 7000, f / "big.png"),
        "truncated png": f / "truncated.png",
        "corrupt png": f / "corrupt.png",
        "empty file": f / "empty.png",
        "text named .png": f / "text.png",
        "jpeg named .png": _save(rgb, f / "jpeg.png", format="JPEG"),
        "truncated jpeg": f / "truncated.jpg",
        "cmyk jpeg": _save(rgb.convert("CMYK"), f / "cmyk.jpg"),
        "16-bit png": _save(i16, f / "16bit.png"),
        "float tiff": _save(gradient.convert("F"), f / "float.tiff"),
        "1-bit png": _save(gradient.convert("1"), f / "1bit.png"),
        "rgba png": _save(rgb.convert("RGBA"), f / "rgba.png"),
        "palette+transparency png": _save(rgb.convert("P"), f / "p.png", transparency=0),
        "animated gif": _save(frames[0], f / "anim.gif", save_all=True, append_images=frames[1:], duration=100),
        "animated png": _save(frames[0], f / "anim.png", save_all=True, append_images=frames[1:], duration=100),
        "animated webp": _save(frames[0], f / "anim.webp", save_all=True, append_images=frames[1:]),
        "exif-rotated jpeg": _save(rgb, f / "exif.jpg", exif=exif),
        "bmp": _save(rgb, f / "img.bmp"),
        "svg": f / "img.svg",
    }
    (f / "truncated.png").write_bytes(data[: len(data) // 2])
    (f / "corrupt.png").write_bytes(data[:40] + bytes(range(256)) * 4 + data[-12:])
    (f / "empty.png").write_bytes(b"")
    (f / "text.png").write_text("this is not an image\n" * 10)
    jpeg = (f / "jpeg.png").read_bytes()
    (f / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (f / "img.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                               '<rect width="10" height="10" fill="red"/></svg>')
    return files


def normal_image(folder: Path) -> Path:
    """A plain 32x32 RGB PNG: the base value of an image input."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    gradient = Image.linear_gradient("L").resize((32, 32))
    Image.merge("RGB", [gradient, gradient.rotate(90), gradient]).save(buf, format="PNG")
    (folder / "normal.png").write_bytes(buf.getvalue())
    return folder / "normal.png"
