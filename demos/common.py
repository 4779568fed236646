"""Helpers every tab shares: loading a registered model with a clear UI error, and reading images."""
from __future__ import annotations

import json
import math
import os
import reprlib
import warnings
from typing import Any, Callable

import gradio as gr
from PIL import Image, ImageOps

import weights

# Refuse decompression bombs early: 40 megapixels is far above any photo a demo needs. PIL itself only
# warns up to twice this and raises above it, so ``check_pixels`` enforces the limit itself.
MAX_IMAGE_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
# A JPEG opened from a file is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's own, a few times faster than the
# full decode) while its longer side stays at least this: above the 800 px the Detection tab shows, and far above
# what any model here sees (32 to 288 px). A 12 MP phone photo decodes at 1008x756.
DECODE_SIDE = 960


# Gradio's share button on images works only on Hugging Face Spaces (elsewhere it says "Must be on Spaces to
# share"); SYSTEM=spaces is how Gradio itself tells
ON_SPACES = os.environ.get("SYSTEM") == "spaces"


def image_buttons(*more: str) -> list[str]:
    """The corner buttons of an image or gallery: download (``more``, e.g. "download_all"), fullscreen, and
    share where it works."""
    return ["download", *more, "fullscreen"] + (["share"] if ON_SPACES else [])


def load_model(name: str) -> Any:
    """``weights.load`` that turns a missing/corrupt folder into a ``gr.Error`` shown in the tab."""
    try:
        return weights.load(name)
    except weights.WeightsError as e:
        raise gr.Error(str(e), title="Model unavailable") from None


def weights_status(*names: str) -> str:
    """Markdown warning for a tab whose models are not present, or '' when all are."""
    lines = []
    for name in names:
        try:
            weights.resolve(name)
        except weights.WeightsError as e:
            lines.append(f"- {e}")
    return ("**Some models of this tab are unavailable:**\n" + "\n".join(lines)) if lines else ""


def too_many_pixels(what: str = "The image has too many pixels") -> gr.Error:
    return gr.Error(f"{what}; the limit is {MAX_IMAGE_PIXELS // 1_000_000} megapixels. Please upload a "
                    "smaller image.")


def check_pixels(width: int, height: int) -> None:
    """Refuse an image over ``MAX_IMAGE_PIXELS`` (checked from the header, before decoding)."""
    if width * height > MAX_IMAGE_PIXELS:
        raise too_many_pixels(f"The image is {width}x{height} pixels")


def _clear_upload_errors(preprocess: Callable[[Any], Any], payload: Any, files: list[Any]) -> Any:
    """``preprocess(payload)`` with the pixel limit checked from each uploaded file's header first, and
    any failure to read an upload turned into a clear ``gr.Error``."""
    try:
        for f in files:
            if getattr(f, "path", None):
                with warnings.catch_warnings():  # 40-80 MP: PIL only warns; check_pixels refuses
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(f.path) as header:
                        check_pixels(*header.size)
        return preprocess(payload)
    except gr.Error:
        raise
    except Image.DecompressionBombError:
        raise too_many_pixels() from None
    except Exception:
        raise gr.Error("Could not read the image: the file is not a PNG, JPEG, WebP, GIF or BMP image, or it is "
                       "damaged. Please upload another.", title="Unreadable image") from None


class ImageInput(gr.Image):
    """``gr.Image`` whose unreadable uploads (corrupt, truncated, empty, not an image, too many pixels) are
    a clear ``gr.Error``; plain ``gr.Image`` answers them with Gradio's internal "Could not preprocess
    input component" message, which names a server path."""

    is_template = True  # rendered by the frontend as a plain Image

    def preprocess(self, payload: Any) -> Any:
        return _clear_upload_errors(super().preprocess, payload, [payload])


def _clear_number_errors(label: str | None, preprocess: Callable[[Any], Any], payload: Any,
                         whole: bool = False) -> Any:
    """``preprocess(payload)`` with clear messages; ``whole``: the field takes whole numbers only (an API
    caller's 1.5 would otherwise be rounded without a word)."""
    if whole and isinstance(payload, float) and math.isfinite(payload) and not payload.is_integer():
        raise gr.Error(f"{label or 'A number'}: expected a whole number, got {payload!r}.")
    try:
        return preprocess(payload)
    except gr.Error as e:  # Gradio's own range check ("Value 1001 is greater than maximum value 1000."): a
        # ValueError too, but its message is the right one; say which field it is about
        raise gr.Error(f"{label or 'A number'}: {e.message}") from None
    except (TypeError, ValueError, OverflowError):  # None, NaN or inf from an API caller, where ints are rounded
        raise gr.Error(f"{label or 'A number'}: expected a finite number, got {reprlib.repr(payload)}.") from None


MAX_SEED = 2**31 - 1  # every tab's Seed field: 0..MAX_SEED


class NumberInput(gr.Number):
    """``gr.Number`` whose unusable values from API callers (NaN or infinity where it rounds to an integer,
    a string) are a clear ``gr.Error`` rather than Gradio's internal "Could not preprocess" message, and an
    emptied box asks for a number in words naming the field."""

    is_template = True

    def preprocess(self, payload: Any) -> Any:
        whole = self.precision == 0
        if payload is None:  # an emptied box: every number field here needs a value
            raise gr.Error(f"{self.label or 'A number'}: enter a {'whole ' if whole else ''}number.")
        return _clear_number_errors(self.label, super().preprocess, payload, whole=whole)


class SliderInput(gr.Slider):
    """``gr.Slider`` with the same clear errors (an API caller's ``null``, string or, on a slider of whole
    steps, a fraction)."""

    is_template = True

    def preprocess(self, payload: Any) -> Any:
        whole = all(float(v).is_integer() for v in (self.step, self.minimum))
        return _clear_number_errors(self.label, super().preprocess, payload, whole=whole)


def clamp_sliders(inputs: list[Any]) -> str:
    """Browser-side code for an event's ``js=``: the event sends each slider among ``inputs`` its value clamped
    to the slider's range, as the slider's box shows it. Gradio's slider sends a typed value on leaving the box
    and clamps the box only after that: a Score threshold of 2 showed 0.95 next to the error for 2, and the
    results of the old threshold. API callers' values are still checked (``SliderInput``'s message)."""
    bounds = [[c.minimum, c.maximum] if isinstance(c, gr.Slider) else None for c in inputs]
    return ("(...args) => { const bounds = " + json.dumps(bounds) + "; "
            "return bounds.map((b, i) => b ? Math.min(Math.max(Number(args[i]), b[0]), b[1]) : args[i]); }")


class SketchpadInput(gr.Sketchpad):
    """``gr.Sketchpad`` with the same clear errors for an unreadable uploaded background or layer."""

    def get_block_name(self) -> str:
        return "imageeditor"  # the frontend component that renders gr.Sketchpad

    def get_block_class(self) -> str:
        return "imageeditor"

    def preprocess(self, payload: Any) -> Any:
        files = [getattr(payload, "background", None), getattr(payload, "composite", None),
                 *(getattr(payload, "layers", None) or [])]
        return _clear_upload_errors(super().preprocess, payload, files)


def photo_required(image: Any, *settings: Any) -> list[Any]:
    """``validator`` of a photo tab's button: without a photo the message shows at the photo box, and the outputs
    keep their contents (a ``gr.Error`` from the function itself puts an "Error" badge on every output)."""
    return [gr.validate(image is not None, "Please upload a photo first, or pick an example."),
            *(gr.validate(True, "") for _ in settings)]  # one result per input, or Gradio fails the event


def image_examples(paths: list[str], image: gr.Image, label: str) -> gr.Examples | None:
    """Example images for ``image`` alone, so a click keeps the tab's other settings as the user set them (None
    when there are none). Made right under the photo box, so that on a phone they come before the results; the
    tab runs its model on ``examples.load_input_event`` (or on the photo's change event), as on an upload."""
    return gr.Examples([[p] for p in paths], [image], label=label) if paths else None


def _to_uint8(image: Image.Image, chunk: int = 1 << 20) -> Any:
    """A 16-bit, 32-bit integer or float grey image's pixels on the 0-255 scale, scaled rather than stretched
    (white stays white, a dark photo stays dark): 16-bit (and 32-bit integer pixels above 255) by 1/257,
    floats in [0, 1] by 255, other floats clipped; NaN is black. Works through ``chunk`` pixels at a time:
    float64 copies of a whole 40-megapixel image took a gigabyte."""
    import numpy as np
    a = np.asarray(image).reshape(-1)  # the image's own dtype (uint16, int32 or float32)
    top = 0.0
    for start in range(0, len(a), chunk):
        part = a[start:start + chunk]
        finite = part[np.isfinite(part)] if part.dtype.kind == "f" else part
        top = max(top, float(finite.max()) if finite.size else 0.0)
    scale = (1 / 257 if image.mode.startswith("I;16") or (image.mode == "I" and top > 255)
             else 255.0 if image.mode == "F" and top <= 1 else 1.0)
    out = np.empty(len(a), dtype=np.uint8)
    for start in range(0, len(a), chunk):
        part = a[start:start + chunk].astype(np.float64) * scale
        part = np.where(np.isfinite(part), part, np.where(part > 0, 255, 0))  # +inf white, -inf and NaN black
        out[start:start + chunk] = np.clip(np.rint(part), 0, 255)
    return out.reshape(image.size[1], image.size[0])


def to_rgb(image: Any) -> Image.Image:
    """Any PIL image or image file (RGBA, LA, P, CMYK, I;16, F, animated, EXIF-rotated) as an RGB image; a JPEG
    file at the smallest of its 1/2, 1/4, 1/8 scales whose longer side is still ``DECODE_SIDE`` or more."""
    if image is None:
        raise gr.Error("Please provide an image.")
    if not isinstance(image, Image.Image):
        try:
            image = Image.open(image)
        except Image.DecompressionBombError:
            raise too_many_pixels() from None
        except Exception:  # a path to something that is not an image
            raise gr.Error("Could not read the image: the file is not an image, or it is damaged.",
                           title="Unreadable image") from None
    check_pixels(*image.size)
    try:
        if image.format == "JPEG":  # (a no-op once it is decoded)
            k = DECODE_SIDE / max(image.size)
            image.draft(image.mode, (math.ceil(image.width * k), math.ceil(image.height * k)))  # at least that
        image.seek(0)  # first frame of an animation
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            image = Image.fromarray(_to_uint8(image))
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        return image.convert("RGB")
    except gr.Error:
        raise
    except Exception as e:  # truncated or corrupt file
        raise gr.Error(f"Could not decode the image: it is damaged or cut short ({e}).",
                       title="Unreadable image") from None
