"""Classification tab: the top-5 CIFAR-10 classes of any photo from each classifier, side by side, and
where each model looked (Grad-CAM for the conv nets, attention rollout for the ViT)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

import weights
from demos.common import (ImageInput, image_buttons, image_examples, load_model, photo_required, to_rgb,
                          weights_status)
from models.classify import explain, tta_logits
from training.classify import fit_input, frame_subject

TITLE = "Classification"
MODELS = {"Compact net": "compact-cifar10", "ResNet-18": "resnet18-cifar10", "ViT": "vit-cifar10"}
# the test-time augmentation each card's accuracy is measured with (training.classify.RECIPES[...].tta)
TTA = {"compact-cifar10": 2, "resnet18-cifar10": 2, "vit-cifar10": 3}
COMPARE = "Compare all"
INPUT_SIZE = 32
VIEW_SIZE = 160  # preview / heat-map display size (nearest-neighbour upscaled)
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples" / "classify"
DETECTOR = "yolo-voc"  # frames the subject before classifying (training.classify.frame_subject)


def prepare(image: Any) -> tuple[Image.Image, torch.Tensor]:
    """Any image (path or PIL, any mode and size) -> the 32x32 RGB image the models see
    (``training.classify.fit_input``: a center crop halfway to a square, then a bicubic, anti-aliased resize)
    and its (1, 3, 32, 32) float tensor in [0, 1]."""
    rgb = to_rgb(image)
    if min(rgb.size) < 1:
        raise gr.Error("The image is empty.")
    small = fit_input(rgb, INPUT_SIZE)
    x = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    return small, x


def frame_photo(rgb: Image.Image) -> tuple[Image.Image, str]:
    """``training.classify.frame_subject`` with the Detection tab's model, and a note saying what was framed; the
    whole photo, and a note why, when the detector finds nothing or is missing."""
    if min(rgb.size) < 1:
        raise gr.Error("The image is empty.")
    try:
        detector = weights.load(DETECTOR)
    except weights.WeightsError as e:  # missing or corrupt: the classifiers still answer
        return rgb, f"Not framed (the detector is unavailable: {e}); the whole photo is classified."
    crop, found = frame_subject(rgb, detector)
    if found is None:
        return rgb, "The detector found no animal or vehicle to frame: the whole photo is classified."
    share = f"{100 * crop.width / rgb.width:.0f}% x {100 * crop.height / rgb.height:.0f}%"
    return crop, f"Framed on the detector's *{found[0]}* (score {found[1]:.2f}): {share} of the photo."


def heat_overlay(small: Image.Image, cam: torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """The 32x32 input upscaled with a black-red-yellow-white heat map of ``cam`` (values in [0,1]) over it."""
    h = cam.clamp(0, 1).numpy()
    heat = np.stack([np.clip(3 * h, 0, 1), np.clip(3 * h - 1, 0, 1), np.clip(3 * h - 2, 0, 1)], -1)
    base = np.asarray(small, dtype=np.float32) / 255
    mixed = (1 - alpha) * base + alpha * heat
    return Image.fromarray((mixed * 255).astype(np.uint8)).resize((VIEW_SIZE, VIEW_SIZE), Image.NEAREST)


# Grad-CAM hooks a layer and attention rollout switches the ViT's blocks to recording: both keep per-call
# state on the shared model, so two concurrent requests to one model would mix it up
_model_locks = {name: threading.Lock() for name in MODELS.values()}


def predict_one(name: str, x: torch.Tensor, small: Image.Image) -> tuple[dict[str, float], Image.Image]:
    """Top-5 probabilities (averaged over the test-time views its card's accuracy is measured with) and the
    explanation overlay of one model."""
    model = load_model(name)
    with _model_locks[name]:
        with torch.no_grad():
            logits = tta_logits(model, x, TTA[name])
        cam, _ = explain(model, x, target=int(logits.argmax()))  # the class shown on top, not the plain view's
    probs = logits.float().softmax(-1)[0]
    top = probs.topk(min(5, len(probs)))
    labels = {model.classes[i]: float(p) for p, i in zip(top.values.tolist(), top.indices.tolist())}
    return labels, heat_overlay(small, cam)


def on_change(image: Any, choice: str = COMPARE, frame: bool = True) -> list[Any]:
    """A changed setting re-classifies the photo shown; no photo (removed, or none yet) clears the outputs."""
    if image is None:
        return [None] * (1 + 2 * len(MODELS)) + [""]
    return classify(image, choice, frame)


def classify(image: Any, choice: str = COMPARE, frame: bool = True) -> list[Any]:
    """[preview, label, heat map] x 3 models, and a notes string. One model: only its column is filled
    (its missing weights are an error); "Compare all": every model that has weights, the others noted.
    ``frame``: classify the subject the detector finds (``frame_photo``) rather than the whole photo."""
    if choice != COMPARE and choice not in MODELS:
        raise gr.Error(f"Unknown model {choice!r}: choose one of {', '.join(MODELS)} or {COMPARE}.")
    if not isinstance(frame, bool):  # an API caller's "false" would otherwise count as true
        raise gr.Error(f"frame must be true or false, not {frame!r}.")
    notes = []
    if frame:
        image, note = frame_photo(to_rgb(image))
        notes.append(note)
    small, x = prepare(image)
    outputs: list[Any] = [small.resize((VIEW_SIZE, VIEW_SIZE), Image.NEAREST)]
    for title, name in MODELS.items():
        if choice not in (COMPARE, title):
            outputs += [None, None]
            continue
        if choice == COMPARE:
            try:
                weights.load(name)
            except weights.WeightsError as e:  # missing or corrupt: noted, the other models still answer
                notes.append(f"- **{title}**: {e}")
                outputs += [None, None]
                continue
        outputs += list(predict_one(name, x, small))
    return outputs + ["\n".join(notes)]


def example_paths() -> list[str]:
    return sorted(str(p) for p in EXAMPLES_DIR.iterdir() if p.suffix in (".png", ".jpg"))


def build() -> None:
    status = weights_status(*MODELS.values())
    if status:
        gr.Markdown(status)
    gr.Markdown("Upload any photo (or take one with your camera): the Detection tab's model first frames the animal "
                "or vehicle it is surest of (untick the box to classify the whole photo), then the longer side is "
                "cropped halfway to a square and the rest shrunk to the 32x32 pixels the CIFAR-10 models were trained"
                " on (preview below). Each model shows its top-5 of the ten classes (airplane, automobile, bird, cat,"
                " deer, dog, frog, horse, ship, truck) and where it looked: Grad-CAM for the conv nets, attention "
                "rollout for the ViT. The probabilities average the mirrored and 1-pixel-shifted views each model's "
                "measured accuracy uses. Photos are harder than CIFAR-10's own images: the About tab has each model's"
                " accuracy on both (`accuracy_voc_photos`: real photos from PASCAL VOC).")
    with gr.Row():
        with gr.Column(scale=1):
            image = ImageInput(type="filepath", label="Image", image_mode=None,
                               sources=["upload", "webcam", "clipboard"], buttons=image_buttons())
            examples = image_examples(example_paths(), image,
                                      "Examples (drawn by this project, and a CC0 photo from scikit-image)")
            choice = gr.Radio([COMPARE, *MODELS], value=COMPARE, label="Model")
            framing = gr.Checkbox(value=True, label="Frame the subject first (the Detection tab's model finds it)")
            run = gr.Button("Classify", variant="primary")
            preview = gr.Image(label="What the model sees (32x32)", interactive=False, height=VIEW_SIZE,
                               buttons=image_buttons())
        with gr.Column(scale=3):
            columns = []
            with gr.Row():
                for title, name in MODELS.items():
                    with gr.Column(min_width=180):
                        label = gr.Label(num_top_classes=5, label=title)
                        heat = gr.Image(label=f"{title}: where it looked", interactive=False, height=VIEW_SIZE,
                                        elem_id=f"classify-heat-{name}", buttons=image_buttons())
                        columns += [label, heat]
            notes = gr.Markdown()
    inputs, outputs = [image, choice, framing], [preview, *columns, notes]
    # One queue group for all three events: at most 2 classifications at once (3 models each), so a burst of
    # uploads neither starves the other tabs' groups nor oversubscribes the CPU.
    queue = {"concurrency_limit": 2, "concurrency_id": "classify"}
    if examples:
        examples.load_input_event.then(classify, inputs, outputs, api_name="classify_example", **queue)
    run.click(classify, inputs, outputs, api_name="classify", validator=photo_required, **queue)
    image.upload(classify, inputs, outputs, api_name="classify_upload", **queue)
    # as on the Detection tab: the results always match the photo and settings shown
    # .change, not .clear: Gradio sends .clear the photo being removed, so on_change would classify it again;
    # not preprocessed: only None matters, and an unreadable upload's message shows once (from the upload event)
    image.change(lambda im: on_change(None) if im is None else [gr.skip()] * len(outputs), image, outputs,
                 api_name="classify_clear", show_progress="hidden", preprocess=False, **queue)
    choice.input(on_change, inputs, outputs, api_name="classify_model", **queue)
    framing.input(on_change, inputs, outputs, api_name="classify_framing", **queue)
