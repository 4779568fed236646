"""Generative models tab: three families trained on Fashion-MNIST side by side. Sample a grid from the
VAE, the beta-VAE or the DCGAN; draw or upload a garment and see the VAE's reconstruction; interpolate
between two seeds or two images; click anywhere on the beta-VAE's 2-d latent map to decode that point."""
from __future__ import annotations

import math
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

import weights
from demos.common import (MAX_SEED, ImageInput, NumberInput, SketchpadInput, SliderInput, image_buttons, load_model,
                          to_rgb, weights_status)
from models.generative import slerp

TITLE = "Generative models"
MODELS = {"VAE": "vae-fashion", "beta-VAE (2-d latent)": "beta-vae-fashion", "DCGAN": "gan-fashion"}
VAES = ["VAE", "beta-VAE (2-d latent)"]
MAP_MODEL = "beta-VAE (2-d latent)"
CLASSES = ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
ALL_CLASSES = "All classes"
LIMITS = {"count": (1, 64), "frames": (2, 16), "cells": (5, 25)}
SIZE = 28
ZOOM = 6              # single images are shown at 28 * ZOOM pixels (nearest neighbour)
MAP_PX = 420          # the latent map's side in pixels, whatever the number of cells
WORK_SIDE = 2048      # uploads are shrunk to this longer side before the ink is found
MAP_EDGE = 0.03       # the map spans prior quantiles [MAP_EDGE, 1 - MAP_EDGE] on both axes


# --------------------------------------------------------------------------- input checks

def _model(choice: str, allowed: list[str] | None = None) -> Any:
    allowed = allowed or list(MODELS)
    if choice not in allowed:
        raise gr.Error(f"Unknown model {choice!r}: choose one of {', '.join(allowed)}.")
    return load_model(MODELS[choice])


def _int(value: Any, name: str, low: int, high: int) -> int:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v != int(v):
        raise gr.Error(f"{name} must be a whole number, got {value!r}")
    if not low <= v <= high:
        raise gr.Error(f"{name} must be between {low} and {high}, got {int(v)}")
    return int(v)


def _class(name: Any, allow_all: bool = False) -> int | None:
    if allow_all and name in (None, "", ALL_CLASSES):
        return None
    if name not in CLASSES:
        raise gr.Error(f"Unknown class {name!r}: choose one of {', '.join(CLASSES)}.")
    return CLASSES.index(name)


# --------------------------------------------------------------------------- images

def to_pil(x: torch.Tensor, zoom: int = ZOOM) -> Image.Image:
    """One (1, 28, 28) or (28, 28) image in [0, 1] as an upscaled grayscale PIL image."""
    a = (x.detach().float().clamp(0, 1).squeeze().numpy() * 255).round().astype(np.uint8)
    im = Image.fromarray(a, mode="L")
    return im.resize((im.width * zoom, im.height * zoom), Image.NEAREST) if zoom > 1 else im


def tile(images: torch.Tensor, columns: int, zoom: int = 3, pad: int = 2) -> Image.Image:
    """(N, 1, 28, 28) in [0, 1] -> a grid image with ``columns`` columns and a thin grey gutter."""
    n = len(images)
    rows = math.ceil(n / columns)
    cell = SIZE * zoom
    grid = Image.new("L", (columns * (cell + pad) + pad, rows * (cell + pad) + pad), 96)
    for i, x in enumerate(images):
        grid.paste(to_pil(x, zoom), (pad + (i % columns) * (cell + pad), pad + (i // columns) * (cell + pad)))
    return grid


def _editor_image(value: Any) -> Image.Image | None:
    """The composite of a gr.Sketchpad/ImageEditor value (a dict), or the image itself."""
    if isinstance(value, dict):
        value = value.get("composite") if value.get("composite") is not None else value.get("background")
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return None
        value = Image.fromarray(value.astype(np.uint8) if value.dtype != np.uint8 else value)
    return value


def prepare(value: Any, sketch: bool = False) -> torch.Tensor:
    """A drawing or photo -> (1, 1, 28, 28) in [0, 1], laid out like Fashion-MNIST: a light garment on
    black, cropped to its bounding box, longest side scaled to 28 pixels, centered (an odd leftover pixel
    above and left, as in Fashion-MNIST).

    Ink is read from the alpha channel of a ``sketch`` on a transparent canvas (strokes of any colour), else
    from brightness, inverted when the border is light (a drawing or product photo on white; a transparent
    upload is laid on white first, so a cutout keeps its own tone)."""
    image = _editor_image(value)
    if image is None:
        raise gr.Error("Draw a garment on the sketchpad or upload an image first.")
    if not isinstance(image, Image.Image):
        image = to_rgb(image)  # a path: opened (and errors reported) by the shared helper
    if image.width < 1 or image.height < 1:
        raise gr.Error("The image is empty.")
    transparent = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if max(image.size) > WORK_SIDE:  # the model sees 28x28: full-size float copies of a 40 MP upload took GBs
        image = (image if image.mode == "RGBA" else image.convert("RGBA")) if transparent else to_rgb(image)
        image = image.reduce(math.ceil(max(image.size) / WORK_SIDE))  # box averages: no ringing around the ink
    ink = None
    if sketch and transparent:
        alpha = np.asarray(image.convert("RGBA"))[..., 3].astype(np.float32) / 255
        if _border(alpha).mean() < 0.1:  # transparent canvas: strokes are wherever alpha is
            ink = alpha
    if ink is None:
        gray = np.asarray(to_rgb(image).convert("L"), dtype=np.float32) / 255
        ink = 1 - gray if _border(gray).mean() > 0.5 else gray
    mask = ink > 0.1 * max(float(ink.max()), 1e-6)
    if ink.max() < 0.05 or not mask.any():
        raise gr.Error("The drawing is empty: draw a garment (or upload a photo of one) first.")
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = Image.fromarray((ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] * 255).astype(np.uint8), mode="L")
    scale = SIZE / max(crop.size)
    crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.LANCZOS)
    canvas = Image.new("L", (SIZE, SIZE), 0)
    canvas.paste(crop, ((SIZE - crop.width + 1) // 2, (SIZE - crop.height + 1) // 2))
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255)[None, None]


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


# --------------------------------------------------------------------------- actions

@torch.no_grad()
def sample_grid(model_choice: str = "VAE", seed: Any = 0, count: Any = 16, class_name: str = ALL_CLASSES
                ) -> tuple[Image.Image, str]:
    """A grid of ``count`` samples from one model with a seed; the DCGAN draws the chosen class (or every
    class in turn), the VAEs are unconditional."""
    model = _model(model_choice)
    seed = _int(seed, "Seed", 0, MAX_SEED)
    n = _int(count, "Number of images", *LIMITS["count"])
    label = _class(class_name, allow_all=True)
    g = torch.Generator().manual_seed(seed)
    if MODELS[model_choice] == "gan-fashion" and not model.conditional:  # trained with --unconditional
        note = "This DCGAN is unconditional: the class choice does not apply."
        return tile(model.sample(n, generator=g), min(n, 8)), note
    if MODELS[model_choice] == "gan-fashion":
        labels = torch.arange(n) % 10 if label is None else torch.full((n,), label)
        images = model.sample(n, labels, generator=g)
        if label is not None:
            return tile(images, min(n, 8)), f"All of class {class_name}."
        note = ("Columns cycle through the ten classes, T-shirt/top first." if n >= 10 else
                f"One image of each of the first {n} classes, T-shirt/top first.")
        return tile(images, min(n, 10)), note  # one class per column
    images = model.sample(n, generator=g)
    note = "The VAEs are unconditional: z ~ N(0, I), decoder mean shown" + \
           (" (the class choice applies to the DCGAN only)." if label is not None else ".")
    return tile(images, min(n, 8)), note


@torch.no_grad()
def reconstruct(sketch: Any, upload: Any = None, model_choice: str = "VAE") -> tuple[Image.Image, Image.Image, str]:
    """Encode a drawing (or an uploaded image, which takes precedence) with a VAE and decode the posterior
    mean: (what the model sees, its reconstruction, notes with the latent code and the image's -ELBO)."""
    model = _model(model_choice, VAES)
    uploaded = _editor_image(upload) is not None
    x = prepare(upload, sketch=False) if uploaded else prepare(sketch, sketch=True)
    mu, logvar = model.encode(x)
    recon = model.decode(mu)
    # one posterior sample, drawn with a fixed seed so the same image always gets the same figure
    neg_elbo = float(model.elbo(x, beta=1.0, generator=torch.Generator().manual_seed(0)).neg_elbo)
    mse = float((recon - x).pow(2).mean())
    code = ", ".join(f"{v:+.2f}" for v in mu[0].tolist())
    notes = (f"Latent mean ({model.latent_dim}-d): [{code}]\n\n"
             f"-ELBO of this image: {neg_elbo:.1f} nats (lower = more typical of Fashion-MNIST; "
             f"see the model card for the test-set average); reconstruction MSE {mse:.4f} per pixel.")
    return to_pil(x[0]), to_pil(recon[0]), notes


def _latent(model: Any, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return model.noise(1, g)[0] if hasattr(model, "noise") else torch.randn(model.latent_dim, generator=g)


@torch.no_grad()
def interpolate(mode: str = "Two seeds", model_choice: str = "VAE", seed_a: Any = 0, seed_b: Any = 1,
                frames: Any = 8, class_a: str = "sneaker", class_b: str = "ankle boot",
                image_a: Any = None, image_b: Any = None) -> Image.Image:
    """A strip of ``frames`` images walking from A to B in latent space: between two seeds (spherical
    path between the Gaussian draws; the DCGAN also blends the two classes' embeddings) or, for the VAEs,
    between the posterior means of two images (straight line)."""
    model = _model(model_choice)
    n = _int(frames, "Frames", *LIMITS["frames"])
    t = torch.linspace(0, 1, n)
    if mode == "Two images":
        if MODELS[model_choice] == "gan-fashion":
            raise gr.Error("The DCGAN has no encoder: interpolate between two images with a VAE, or between "
                           "two seeds with the DCGAN.")
        if _editor_image(image_a) is None or _editor_image(image_b) is None:
            raise gr.Error("Upload both image A and image B (or switch to 'Two seeds').")
        za, zb = model.encode(prepare(image_a))[0][0], model.encode(prepare(image_b))[0][0]
        images = model.decode(za + t[:, None] * (zb - za))
    elif mode == "Two seeds":
        za = _latent(model, _int(seed_a, "Seed A", 0, MAX_SEED))
        zb = _latent(model, _int(seed_b, "Seed B", 0, MAX_SEED))
        z = slerp(za, zb, t)
        if MODELS[model_choice] == "gan-fashion" and not model.conditional:  # trained with --unconditional
            images = model.generator.generate(z)
        elif MODELS[model_choice] == "gan-fashion":
            emb = model.generator.embed(torch.tensor([_class(class_a), _class(class_b)]))
            images = model.generator.generate(z, emb[0] + t[:, None] * (emb[1] - emb[0]))
        else:
            images = model.decode(z)
    else:
        raise gr.Error(f"Unknown mode {mode!r}: choose 'Two seeds' or 'Two images'.")
    return tile(images, n, zoom=3)


def _quantile_to_z(u: np.ndarray) -> torch.Tensor:
    """Prior quantiles in [0, 1] -> z = Phi^-1(u): equal map areas hold equal prior probability."""
    u = MAP_EDGE + (1 - 2 * MAP_EDGE) * np.clip(u, 0, 1)
    return math.sqrt(2) * torch.erfinv(torch.as_tensor(2 * u - 1, dtype=torch.float32))


@torch.no_grad()
def latent_map(cells: Any = 15) -> Image.Image:
    """The beta-VAE's decoder over a cells x cells grid of its 2-d latent space (z1 left to right, z2
    bottom to top, spaced by prior quantiles), as one MAP_PX-pixel image."""
    model = _model(MAP_MODEL)
    n = _int(cells, "Cells per side", *LIMITS["cells"])
    centers = (np.arange(n) + 0.5) / n
    z1 = _quantile_to_z(centers)
    z2 = _quantile_to_z(1 - centers)  # top row = largest z2
    z = torch.stack(torch.meshgrid(z2, z1, indexing="ij")[::-1], -1).reshape(-1, 2)
    grid = tile(model.decode(z), n, zoom=1, pad=0)
    return grid.resize((MAP_PX, MAP_PX), Image.BILINEAR)


@torch.no_grad()
def decode_point(evt: gr.SelectData) -> tuple[Image.Image, str]:
    """Decode the latent point under a click on the map (pixel coordinates of the MAP_PX image)."""
    try:
        x, y = (float(v) for v in evt.index)
    except (TypeError, ValueError):
        raise gr.Error("Click a point on the latent map.") from None
    return decode_xy(x, y)


@torch.no_grad()
def decode_xy(x: float, y: float) -> tuple[Image.Image, str]:
    if not (0 <= x <= MAP_PX and 0 <= y <= MAP_PX):
        raise gr.Error(f"The point ({x:g}, {y:g}) is outside the {MAP_PX}x{MAP_PX} map.")
    model = _model(MAP_MODEL)
    z = torch.stack([_quantile_to_z(np.array(x / MAP_PX)), _quantile_to_z(np.array(1 - y / MAP_PX))])[None]
    return to_pil(model.decode(z)[0]), f"z = ({z[0, 0]:+.2f}, {z[0, 1]:+.2f})"


def metrics_table() -> str:
    rows = []
    for title, name in MODELS.items():
        m = weights.card_metrics(name) if weights.available(name) else {}
        if not m:
            continue
        elbo = m.get("neg_elbo_nats")
        cc = m.get("class_consistency")
        rows.append(f"| {title} | {f'{elbo:.1f}' if elbo is not None else '-'} | "
                    f"{m.get('fd_1000_samples', float('nan')):.2f} | {f'{cc:.3f}' if cc is not None else '-'} |")
    if not rows:
        return ""
    return ("| model | test -ELBO (nats/image) | Frechet distance (1,000 samples) | class consistency |\n"
            "|---|---|---|---|\n" + "\n".join(rows))


# --------------------------------------------------------------------------- layout

def build() -> None:
    status = weights_status(*MODELS.values())
    if status:
        gr.Markdown(status)
    gr.Markdown("Three generative families trained here on Fashion-MNIST (28x28 grey garments): a VAE, a "
                "beta-VAE with a 2-d latent space, and a class-conditional DCGAN. Frechet distances are measured "
                "in the features of a separate evaluation classifier (lower is better).")
    table = metrics_table()
    if table:
        gr.Markdown(table)

    gr.Markdown("### Sample")
    with gr.Row():
        with gr.Column(scale=1):
            s_model = gr.Radio(list(MODELS), value="VAE", label="Model")
            s_class = gr.Dropdown([ALL_CLASSES, *CLASSES], value=ALL_CLASSES, label="Class (DCGAN)")
            s_seed = NumberInput(value=0, precision=0, label="Seed", minimum=0, maximum=MAX_SEED)
            s_count = SliderInput(*LIMITS["count"], value=20, step=1, label="Number of images")
            s_run = gr.Button("Sample", variant="primary")
        with gr.Column(scale=2):
            s_grid = gr.Image(label="Samples", interactive=False, format="png", elem_id="gen-samples",
                              buttons=image_buttons())
            s_note = gr.Markdown()
    s_run.click(sample_grid, [s_model, s_seed, s_count, s_class], [s_grid, s_note], api_name="sample")

    gr.Markdown("### Reconstruct a drawing\nPick the brush in the drawing's toolbar, draw a garment in dark ink (or "
                "upload an image), then press Reconstruct.")
    with gr.Row():
        sketch = SketchpadInput(label="Drawing", type="pil", canvas_size=(280, 280),
                                brush=gr.Brush(default_size=18, colors=["#000000"], color_mode="fixed"), height=340,
                                elem_id="gen-sketch")
        with gr.Column():
            upload = ImageInput(label="...or upload an image (used instead of the drawing)", type="pil",
                                image_mode=None, sources=["upload", "clipboard"], height=200, buttons=image_buttons())
            r_model = gr.Radio(VAES, value="VAE", label="Model")
            r_run = gr.Button("Reconstruct", variant="primary")
        with gr.Column():
            with gr.Row():
                r_input = gr.Image(label="VAE input, 28x28", interactive=False, format="png", height=200,
                                   buttons=image_buttons())
                r_output = gr.Image(label="Reconstruction", interactive=False, format="png", height=200,
                                    elem_id="gen-recon", buttons=image_buttons())
            r_notes = gr.Markdown()
    r_run.click(reconstruct, [sketch, upload, r_model], [r_input, r_output, r_notes], api_name="reconstruct")

    gr.Markdown("### Interpolate")
    with gr.Row():
        with gr.Column(scale=1):
            i_mode = gr.Radio(["Two seeds", "Two images"], value="Two seeds", label="Between")
            i_model = gr.Radio(list(MODELS), value="VAE", label="Model")
            i_frames = SliderInput(*LIMITS["frames"], value=10, step=1, label="Frames")
            with gr.Row():
                i_seed_a = NumberInput(value=0, precision=0, label="Seed A", minimum=0, maximum=MAX_SEED)
                i_seed_b = NumberInput(value=1, precision=0, label="Seed B", minimum=0, maximum=MAX_SEED)
            with gr.Row():
                i_class_a = gr.Dropdown(CLASSES, value="sneaker", label="Class A (DCGAN)")
                i_class_b = gr.Dropdown(CLASSES, value="ankle boot", label="Class B (DCGAN)")
        with gr.Column(scale=2):
            with gr.Row():
                i_image_a = ImageInput(label="Image A", type="pil", image_mode=None, sources=["upload", "clipboard"],
                                       height=160, buttons=image_buttons())
                i_image_b = ImageInput(label="Image B", type="pil", image_mode=None, sources=["upload", "clipboard"],
                                       height=160, buttons=image_buttons())
            i_run = gr.Button("Interpolate", variant="primary")
            i_strip = gr.Image(label="Interpolation A -> B", interactive=False, format="png", elem_id="gen-strip",
                               buttons=image_buttons())
    i_run.click(interpolate, [i_mode, i_model, i_seed_a, i_seed_b, i_frames, i_class_a, i_class_b, i_image_a,
                              i_image_b], i_strip, api_name="interpolate")

    gr.Markdown("### 2-d latent map (beta-VAE)\nEach cell decodes one point of the 2-d latent space (z1 left to "
                "right, z2 bottom to top, spaced by the prior's quantiles). Click anywhere to decode that point.")
    initial = None
    if weights.available(MODELS[MAP_MODEL]):
        try:
            initial = latent_map(15)
        except gr.Error:
            initial = None
    with gr.Row():
        with gr.Column(scale=2):
            m_map = gr.Image(value=initial, label="Latent map (click a point)", interactive=False, format="png",
                             height=MAP_PX + 40, elem_id="gen-map", buttons=image_buttons())
            with gr.Row():
                m_cells = SliderInput(*LIMITS["cells"], value=15, step=1, label="Cells per side")
                m_draw = gr.Button("Draw map")
        with gr.Column(scale=1):
            m_point = gr.Image(label="Decoded point", interactive=False, format="png", height=220,
                               elem_id="gen-point", buttons=image_buttons())
            m_z = gr.Markdown()
    m_draw.click(latent_map, m_cells, m_map, api_name="latent_map")
    # a click carries gr.SelectData, which API clients cannot send: the event is UI-only
    m_map.select(decode_point, None, [m_point, m_z], api_name="decode_point", api_visibility="private")
