"""Detection tab: boxes, class names and scores for the 20 PASCAL VOC classes on any photo or a live
webcam, from the YOLO-style detector trained here, with score / NMS-IoU thresholds and a class filter."""
from __future__ import annotations

import math
import reprlib
import time
from pathlib import Path
from typing import Any, Callable

import gradio as gr
from PIL import Image, ImageDraw, ImageFont

from demos.common import (ImageInput, SliderInput, clamp_sliders, image_buttons, image_examples, load_model,
                          photo_required, to_rgb, weights_status)
from models.detect import VOC_CLASSES, detect_photo

TITLE = "Detection"
MODEL = "yolo-voc"
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples" / "detect"
VIEW_SIZE = 800      # longest side of the annotated image shown
COUNT_HEADERS = ["class", "count", "best score"]
LIVE_EVERY = 0.25    # seconds between webcam frames sent to the server (a frame takes ~0.15 s on one thread)
LIVE_LIMIT = 120     # seconds a live stream runs, so that a forgotten browser tab does not hold a CPU
LIVE_HEIGHT = 360    # pixels, the webcam view and the live detections alike
# 20 distinguishable colours (one per VOC class)
PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
           "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#ffd8b1",
           "#000075", "#808080"]


def check_settings(score: float, nms_iou: float, classes: list[str] | None) -> list[str]:
    """Validate the controls (API callers can send anything); returns the classes to keep."""
    for name, value in (("Score threshold", score), ("NMS IoU threshold", nms_iou)):
        if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise gr.Error(f"{name} must be a number between 0 and 1, got {value!r}.")
    if classes is not None and not isinstance(classes, (list, tuple)):  # "person" would be five letters
        raise gr.Error(f"Classes must be a list of class names (empty for all), got {reprlib.repr(classes)}.")
    classes = list(classes or [])
    unknown = [c for c in classes if c not in VOC_CLASSES]
    if unknown:
        raise gr.Error(f"Unknown class {unknown[0]!r}: choose among {', '.join(VOC_CLASSES)}.")
    return classes or list(VOC_CLASSES)


def run_detector(image: Image.Image, score: float, nms_iou: float) -> list[tuple[str, float, list[float]]]:
    """(class, score, [x1, y1, x2, y2] in ``image`` pixels) for every detection, best first."""
    return detect_photo(load_model(MODEL), image, float(score), float(nms_iou))


def draw(image: Image.Image, detections: list[tuple[str, float, list[float]]]) -> Image.Image:
    """The image (shrunk to VIEW_SIZE) with a coloured box and a "class score" tag per detection."""
    view = image.copy()
    view.thumbnail((VIEW_SIZE, VIEW_SIZE), Image.BILINEAR)
    k = view.width / image.width
    d = ImageDraw.Draw(view)
    line = max(2, round(max(view.size) / 250))
    font = ImageFont.load_default(size=max(11, round(max(view.size) / 40)))
    for name, score, box in reversed(detections):  # best drawn last, on top
        colour = PALETTE[VOC_CLASSES.index(name) % len(PALETTE)] if name in VOC_CLASSES else PALETTE[0]
        x1, y1, x2, y2 = (v * k for v in box)
        d.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        tag = f"{name} {score:.2f}"
        l, t, r, b = d.textbbox((0, 0), tag, font=font)
        ty = y1 - (b - t) - 4 if y1 - (b - t) - 4 >= 0 else y1
        d.rectangle([x1, ty, x1 + (r - l) + 6, ty + (b - t) + 4], fill=colour)
        d.text((x1 + 3 - l, ty + 2 - t), tag, fill="black" if colour in ("#ffe119", "#fffac8", "#bcf60c",
                                                                          "#aaffc3", "#ffd8b1", "#46f0f0")
               else "white", font=font)
    return view


def counts(detections: list[tuple[str, float, list[float]]]) -> list[list[Any]]:
    """Rows [class, count, best score], most frequent class first."""
    table: dict[str, list[Any]] = {}
    for name, score, _ in detections:
        row = table.setdefault(name, [name, 0, 0.0])
        row[1] += 1
        row[2] = max(row[2], round(score, 3))
    return sorted(table.values(), key=lambda r: (-r[1], -r[2]))


def find(image: Any, score: float, nms_iou: float, classes: list[str] | None
         ) -> tuple[Image.Image, list[tuple[str, float, list[float]]], list[str]]:
    """(the image as RGB, its detections of the chosen classes, those classes) after checking the settings."""
    keep = check_settings(score, nms_iou, classes)
    rgb = to_rgb(image)
    if min(rgb.size) < 1:
        raise gr.Error("The image is empty.")
    return rgb, [d for d in run_detector(rgb, score, nms_iou) if d[0] in keep], keep


def detect_objects(image: Any, score: float = 0.3, nms_iou: float = 0.5,
                   classes: list[str] | None = None) -> tuple[Image.Image, list[list[Any]], str]:
    """The annotated image, the count-per-class rows and a summary line."""
    rgb, detections, keep = find(image, score, nms_iou, classes)
    rows = counts(detections)
    if not detections:
        which = "" if len(keep) == len(VOC_CLASSES) else f" of {', '.join(keep)}"
        summary = (f"**Nothing detected**{which} above a score of {float(score):.2f}. Lower the score "
                   "threshold, or try a photo with people, animals, vehicles or furniture.")
    else:
        summary = f"**{len(detections)} object{'s' if len(detections) > 1 else ''}** above a score of {float(score):.2f}."
    return draw(rgb, detections), rows, summary


def on_image(image: Any, score: float = 0.3, nms_iou: float = 0.5,
             classes: list[str] | None = None) -> tuple[Image.Image | None, list[list[Any]], str]:
    """A new photo (uploaded, pasted or an example) or new settings are detected at once; no photo (cleared, or
    none yet) clears the outputs."""
    if image is None:
        return None, [], ""
    return detect_objects(image, score, nms_iou, classes)


def detect_live(frame: Any, score: float = 0.3, nms_iou: float = 0.5,
                classes: list[str] | None = None) -> tuple[Image.Image | None, str]:
    """One webcam frame: the frame with its boxes, and a line of what is in it and how long that took."""
    if frame is None:
        return None, ""
    start = time.perf_counter()
    rgb, detections, _ = find(frame, score, nms_iou, classes)
    seen = ", ".join(f"{name} x{count}" for name, count, _ in counts(detections)) or "nothing"
    return draw(rgb, detections), f"{seen} ({(time.perf_counter() - start) * 1000:.0f} ms for this frame)"


def live_frames(camera: gr.Image, score: gr.Slider, nms_iou: gr.Slider) -> Callable[..., tuple[Any, str]]:
    """``detect_live`` for the webcam stream, whose event reads its inputs itself: each frame comes with the
    sliders' values as they are typed (an emptied box, 0 on the way to 0.5), and the sliders' range checks sent
    an error per frame (17 in 4 s); those values are clamped as the box shows them once left."""
    def clamped(value: Any, slider: gr.Slider) -> Any:
        if value is None:
            return slider.minimum
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return min(max(value, slider.minimum), slider.maximum)
        return value  # anything else is refused by check_settings

    def on_frame(frame: Any, score_value: Any, nms_value: Any, classes: Any) -> tuple[Any, str]:
        try:
            payload = None if frame is None else camera.data_model.model_validate(frame)
        except ValueError:
            raise gr.Error("The webcam frame is not an image file.") from None
        image = None if payload is None else camera.preprocess(payload)
        return detect_live(image, clamped(score_value, score), clamped(nms_value, nms_iou), classes)
    return on_frame


def example_paths() -> list[str]:
    return sorted(str(p) for p in EXAMPLES_DIR.iterdir() if p.suffix in (".jpg", ".png"))


def build() -> None:
    status = weights_status(MODEL)
    if status:
        gr.Markdown(status)
    gr.Markdown("Upload a photo of any size: the detector (a small YOLO-style network trained here on the "
                "PASCAL VOC 2007 train split) boxes the 20 VOC classes: person, animals (bird, cat, cow, "
                "dog, horse, sheep), vehicles (aeroplane, bicycle, boat, bus, car, motorbike, train) and "
                "indoor objects (bottle, chair, dining table, potted plant, sofa, tv/monitor). Its measured "
                "accuracy is on the About tab; expect misses and false alarms from a model trained on one CPU. "
                "Or point a webcam at the world: take a snapshot with the Photo box, or open Live webcam below.")
    with gr.Row():
        with gr.Column(scale=1):
            image = ImageInput(type="filepath", label="Photo", image_mode=None,
                               sources=["upload", "webcam", "clipboard"], buttons=image_buttons())
            # an example only fills the photo; its change event below runs the detector with the current settings
            image_examples(example_paths(), image, "Examples (scikit-image sample photos)")
            # re-detection runs on release (pointer up, or leaving the number box), not on each keystroke:
            # typing 0.05 passes through 0, which is out of range
            score = SliderInput(0.05, 0.95, value=0.3, step=0.05, label="Score threshold",
                                info="applied when you let go of the slider or leave the box (or press Detect)")
            nms_iou = SliderInput(0.1, 0.9, value=0.5, step=0.05, label="NMS IoU threshold",
                                  info="boxes of one class overlapping more than this are merged")
            classes = gr.Dropdown(VOC_CLASSES, value=[], multiselect=True, label="Classes (empty: all)")
            run = gr.Button("Detect", variant="primary")
        with gr.Column(scale=2):
            annotated = gr.Image(label="Detections", interactive=False, type="pil", elem_id="detect-annotated",
                                 buttons=image_buttons())
            summary = gr.Markdown()
            table = gr.Dataframe(headers=COUNT_HEADERS, datatype=["str", "number", "number"],
                                 label="Objects per class", interactive=False)
    inputs, outputs = [image, score, nms_iou, classes], [annotated, table, summary]
    with gr.Accordion("Live webcam", open=False):
        gr.Markdown(f"Start the camera (allow the browser to use it): every {LIVE_EVERY:g} s a frame is detected "
                    f"with the settings above, for up to {LIVE_LIMIT // 60} minutes at a time; start it again to "
                    "go on. One stream runs at a time: *Waiting* means another visitor's is on, and it ends within "
                    f"{LIVE_LIMIT // 60} minutes.")
        with gr.Row():
            camera = ImageInput(sources=["webcam"], streaming=True, type="pil", label="Webcam", height=LIVE_HEIGHT,
                                buttons=image_buttons())
            with gr.Column():
                live = gr.Image(label="Live detections", interactive=False, type="pil", height=LIVE_HEIGHT,
                                buttons=image_buttons())
                live_status = gr.Markdown()
    common = {"concurrency_limit": 2, "concurrency_id": "detect"}
    clamp_js = clamp_sliders(inputs)  # the sliders clamped in the browser as their boxes show them
    run.click(detect_objects, inputs, outputs, api_name="detect", validator=photo_required, **common)
    # upload, example, clear (a photo dropped while a typed threshold is still in its box: clamped too)
    image.change(on_image, inputs, outputs, api_name="detect_image", js=clamp_js, **common)
    # a changed setting redetects the photo shown, if any (on_image: no photo yet is no error)
    # always_last: clicking into the box releases the slider too (the old value), and the default "once" dropped
    # the release of a value pasted and left while that run was still going
    score.release(on_image, inputs, outputs, api_name="detect_score", js=clamp_js,
                  trigger_mode="always_last", **common)
    nms_iou.release(on_image, inputs, outputs, api_name="detect_nms", js=clamp_js,
                    trigger_mode="always_last", **common)
    classes.input(on_image, inputs, outputs, api_name="detect_classes", **common)
    # Its own queue slot: one stream holds it for up to LIVE_LIMIT s, and photos must not wait behind it.
    # Browser only: an API call of a stream event would hold that slot LIVE_LIMIT s for one frame's answer;
    # API clients send frames to /detect instead.
    camera.stream(live_frames(camera, score, nms_iou), [camera, score, nms_iou, classes], [live, live_status],
                  api_name="detect_live", api_visibility="private", stream_every=LIVE_EVERY, time_limit=LIVE_LIMIT,
                  concurrency_limit=1, concurrency_id="detect-live", show_progress="hidden", preprocess=False)
