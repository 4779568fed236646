"""Captioning tab: a sentence describing any photo, the alternatives beam search kept, and where in the
image the model looked for each word (cross-attention averaged over heads and layers)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from demos.common import (ImageInput, SliderInput, clamp_sliders, image_buttons, image_examples, load_model,
                          photo_required, to_rgb, weights_status)

TITLE = "Captioning"
NAME = "captioner-flickr8k"
MAX_BEAM = 8
VIEW = 384  # longer side of the heat-map view
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples" / "caption"


def prepare(image: Any, size: int) -> tuple[Image.Image, torch.Tensor]:
    """Any image -> (its RGB version, the (1, 3, size, size) float tensor the model sees: squashed to a
    square like the Flickr8k training images)."""
    rgb = to_rgb(image)
    if min(rgb.size) < 1:
        raise gr.Error("The image is empty.")
    small = rgb.resize((size, size), Image.BICUBIC)
    return rgb, torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def fit_view(rgb: Image.Image) -> Image.Image:
    """``rgb`` scaled to VIEW pixels on its longer side (at least 1 pixel on the other)."""
    scale = VIEW / max(rgb.size)
    size = max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))
    return rgb if rgb.size == size else rgb.resize(size, Image.BICUBIC)


def overlay(rgb: Image.Image, att: torch.Tensor, alpha: float = 0.55) -> Image.Image:
    """``rgb`` (shrunk to VIEW on its longer side) under a black-red-yellow-white map of ``att`` (a grid,
    stretched bilinearly to the image like the squashed input was)."""
    view = fit_view(rgb)
    w, h = view.size
    base = np.asarray(view, dtype=np.float32) / 255
    a = F.interpolate(att[None, None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    a = (a - a.min()) / (a.max() - a.min()) if a.max() > a.min() else a * 0
    a = a.numpy()[..., None]
    heat = np.concatenate([np.clip(3 * a, 0, 1), np.clip(3 * a - 1, 0, 1), np.clip(3 * a - 2, 0, 1)], -1)
    return Image.fromarray((((1 - alpha) * base + alpha * heat).clip(0, 1) * 255).astype(np.uint8))


def check_settings(beam_size: Any, length_penalty: Any, no_repeat_ngram: Any) -> tuple[int, float, int]:
    try:
        beam, alpha, ngram = int(beam_size), float(length_penalty), int(no_repeat_ngram or 0)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        raise gr.Error("Beam size, length penalty and no-repeat n-gram must be numbers.") from None
    if not 1 <= beam <= MAX_BEAM:
        raise gr.Error(f"Beam size must be between 1 and {MAX_BEAM}, got {beam}.")
    if not 0 <= alpha <= 3:
        raise gr.Error(f"Length penalty must be between 0 and 3, got {alpha}.")
    if not 0 <= ngram <= 4:
        raise gr.Error(f"No-repeat n-gram must be between 0 (off) and 4, got {ngram}.")
    return beam, alpha, ngram


def word_choices(words: list[str]) -> list[str]:
    return [f"{i + 1}. {w}" for i, w in enumerate(words)] + [f"{len(words) + 1}. <end>"]


_model_lock = threading.Lock()


def caption(image: Any, beam_size: float = 3, length_penalty: float = 0.0, no_repeat_ngram: float = 0,
            ) -> tuple[str, list[list[Any]], Any, Image.Image, list[tuple[Image.Image, str]]]:
    """The best caption, the beams [rank, caption, log-prob, score], the word selector (first word
    chosen), that word's heat map, and the heat maps of every word (gallery)."""
    beam, alpha, ngram = check_settings(beam_size, length_penalty, no_repeat_ngram)
    model = load_model(NAME)
    rgb, x = prepare(image, model.config.image_size)
    with _model_lock, torch.no_grad():  # decoding keeps per-call state on the model: one call at a time
        feats = model.features(x)
        hyps = model.beam(feats, beam, alpha, ngram)
        best = hyps[0]
        maps = model.cross_attention(feats, best.tokens)
    words = model.words(best.tokens)
    beams = [[i + 1, " ".join(model.words(h.tokens)) + ("" if h.finished else " …"), round(h.logprob, 3),
              round(h.score, 3)] for i, h in enumerate(hyps)]
    choices = word_choices(words)
    view = fit_view(rgb)  # once: resizing a full-size photo for every word took seconds each on huge uploads
    views = [overlay(view, m) for m in maps]
    gallery = list(zip(views, choices))
    text = " ".join(words).capitalize() + "." if words else "(empty caption)"
    return text, beams, gr.update(choices=choices, value=choices[0]), views[0], gallery


def on_change(image: Any, beam_size: float = 3, length_penalty: float = 0.0, no_repeat_ngram: float = 0
              ) -> tuple[Any, ...]:
    """A changed setting re-captions the photo shown; no photo (removed, or none yet) clears the outputs."""
    if image is None:
        return "", [], gr.update(choices=[], value=None), None, []
    return caption(image, beam_size, length_penalty, no_repeat_ngram)


def pick(gallery: list[Any] | None, choice: str | None) -> Any:
    """The stored heat map of the chosen word (no recomputation): the gallery holds one per word."""
    if not gallery or not choice:
        return gr.update()
    try:
        n = int(str(choice).split(".", 1)[0]) - 1
        item = gallery[n]
    except (ValueError, IndexError):
        return gr.update()
    return item[0] if isinstance(item, (tuple, list)) else item


def example_paths() -> list[str]:
    return sorted(str(p) for p in EXAMPLES_DIR.glob("*.jpg"))


def build() -> None:
    status = weights_status(NAME)
    if status:
        gr.Markdown(status)
    gr.Markdown("Upload any photo (or take one with your camera): the captioner (a CNN that keeps a grid of features "
                "+ a Transformer decoder, trained here on the 6,000 Flickr8k training images) writes a sentence with "
                "beam search. Pick a word to see where in the image the decoder looked when it wrote it "
                "(cross-attention, averaged over heads and layers).")
    with gr.Row():
        with gr.Column(scale=1):
            image = ImageInput(type="filepath", label="Image", image_mode=None,
                               sources=["upload", "webcam", "clipboard"], buttons=image_buttons())
            examples = image_examples(example_paths(), image, "Examples")
            beam = SliderInput(1, MAX_BEAM, value=3, step=1, label="Beam size (1 = greedy)")
            with gr.Accordion("Decoding options", open=False):
                alpha = SliderInput(0, 3, value=0.0, step=0.1,
                                  label="Length penalty alpha (score = log-prob / ((5 + length) / 6)^alpha)")
                ngram = SliderInput(0, 4, value=0, step=1, label="No-repeat n-gram (0 = off)")
            run = gr.Button("Caption", variant="primary")
        with gr.Column(scale=2):
            best = gr.Textbox(label="Caption", interactive=False)
            beams = gr.Dataframe(headers=["rank", "caption", "log-prob", "score"], label="Beams",
                                 interactive=False, wrap=True, column_widths=["60px", "360px", "90px", "80px"])
            with gr.Row():
                with gr.Column(scale=1, min_width=200):
                    word = gr.Radio([], label="Word (click to see where it looked)")
                with gr.Column(scale=2):
                    heat = gr.Image(label="Attention for the chosen word", interactive=False, height=VIEW,
                                    elem_id="caption-heat", buttons=image_buttons())
            gallery = gr.Gallery(label="Every word's attention", columns=6, height=220, interactive=False,
                                 type="filepath", buttons=image_buttons("download_all"))
    inputs, outputs = [image, beam, alpha, ngram], [best, beams, word, heat, gallery]
    queue = {"concurrency_limit": 2, "concurrency_id": "caption"}
    clamp_js = clamp_sliders(inputs)  # the sliders clamped in the browser as their boxes show them
    if examples:
        examples.load_input_event.then(caption, inputs, outputs, api_name="caption_example", **queue)
    run.click(caption, inputs, outputs, api_name="caption", validator=photo_required, **queue)
    image.upload(caption, inputs, outputs, api_name="caption_upload", js=clamp_js, **queue)
    # as on the Detection tab: the results always match the photo and settings shown
    # .change, not .clear: Gradio sends .clear the photo being removed, so on_change would caption it again;
    # not preprocessed: only None matters, and an unreadable upload's message shows once (from the upload event)
    image.change(lambda im: on_change(None) if im is None else [gr.skip()] * len(outputs), image, outputs,
                 api_name="caption_clear", show_progress="hidden", preprocess=False, **queue)
    for setting, name in ((beam, "beam"), (alpha, "length_penalty"), (ngram, "no_repeat_ngram")):
        setting.release(on_change, inputs, outputs, api_name=f"caption_{name}", js=clamp_js,
                        trigger_mode="always_last", **queue)  # as on the Detection tab
    # the maps are already in the gallery (API clients get them all from /caption): picking is a lookup
    word.change(pick, [gallery, word], heat, api_name="caption_pick_word", queue=False)
