"""Diffusion tab: pick a class, a sampler (DDPM or DDIM), steps, eta and a guidance scale, and watch an
image emerge from noise; then scrub through the stored steps, seeing the noisy x_t and the model's current
guess of the clean image x_0 side by side; the final grid and a GIF of the whole trajectory."""
from __future__ import annotations

import math
import reprlib
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import gradio as gr
import numpy as np
import torch
from PIL import Image

import weights
from demos.common import MAX_SEED, NumberInput, SliderInput, image_buttons, load_model, weights_status
from models.classify import CIFAR10_CLASSES
from models.schedulers import make_scheduler, sample_steps

TITLE = "Diffusion"
MODELS = {"Fashion-MNIST": "ddpm-fashion", "CIFAR-10": "ddpm-cifar10"}
CLASSES = {"Fashion-MNIST": ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                             "bag", "ankle boot"],
           "CIFAR-10": list(CIFAR10_CLASSES)}
ALL_CLASSES, UNCONDITIONAL = "one of each class", "unconditional (null class)"
SAMPLERS = {"DDIM": "ddim", "DDPM": "ddpm"}
LIMITS = {"steps": (1, 1000), "images": (1, 16), "guidance": (0.0, 10.0), "eta": (0.0, 1.0)}
MAX_WORK = 8000       # network evaluations per request: steps x images, x2 with guidance (about a minute here)
MAX_FRAMES = 100      # steps stored for the scrubber and the GIF
LIVE_UPDATES = 25     # streamed frames per run
ZOOM = 4              # stored frames are 1:1 (a session keeps up to MAX_FRAMES of them); the views are zoomed
GIF_DIR = Path(tempfile.gettempdir()) / "zoo-diffusion-gifs"
GIF_KEEP_S = 600      # Gradio copies an output file into its cache at once; older GIFs here are deleted


def default_dataset() -> str:
    return next((label for label, name in MODELS.items() if weights.available(name)), "Fashion-MNIST")


def class_choices(dataset: str) -> list[str]:
    known = dataset if isinstance(dataset, str) and dataset in CLASSES else "Fashion-MNIST"  # [] from the API
    return CLASSES[known] + [ALL_CLASSES, UNCONDITIONAL]


# --------------------------------------------------------------------------- checks

def _number(name: str, value: Any, integer: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a number, got {reprlib.repr(value)}") from None
    except OverflowError:  # an integer beyond the float range
        raise gr.Error(f"{name} is too large.") from None
    if not math.isfinite(v):
        raise gr.Error(f"{name} must be a finite number, got {value!r}")
    if integer and v != int(v):
        raise gr.Error(f"{name} must be a whole number, got {value!r}")
    return int(v) if integer else v


def check_settings(sampler: str, steps: Any, eta: Any, guidance: Any, n_images: Any, seed: Any
                   ) -> tuple[str, int, float, float, int, int]:
    """Validated settings; anything out of range is a ``gr.Error`` naming the limit."""
    if sampler not in SAMPLERS:
        raise gr.Error(f"Unknown sampler {sampler!r}: choose {' or '.join(SAMPLERS)}.")
    steps, n_images, seed = (_number("Steps", steps, True), _number("Number of images", n_images, True),
                             _number("Seed", seed, True))
    eta, guidance = _number("eta", eta), _number("Guidance scale", guidance)
    for name, key, v in (("Steps", "steps", steps), ("Number of images", "images", n_images),
                         ("Guidance scale", "guidance", guidance), ("eta", "eta", eta)):
        low, high = LIMITS[key]
        if not low <= v <= high:
            raise gr.Error(f"{name} must be between {low:g} and {high:g}, got {v:g}.")
    if not 0 <= seed <= MAX_SEED:  # as on the Generative tab (this took any seed modulo 2**31 and reported that)
        raise gr.Error(f"Seed must be between 0 and {MAX_SEED}, got {seed}.")
    return SAMPLERS[sampler], steps, eta, guidance, n_images, seed


def check_work(steps: int, n_images: int, guided: bool) -> None:
    """Refuse requests over MAX_WORK network evaluations: guidance runs the model twice per image and step
    (conditional and null class, see ``guided_eps``)."""
    passes = 2 if guided else 1
    if steps * n_images * passes > MAX_WORK:
        with_guidance = " with guidance (two passes each)" if guided else ""
        raise gr.Error(f"{steps} steps x {n_images} images{with_guidance} is too much work for one request on a "
                       f"CPU (limit {MAX_WORK} image-steps): use fewer steps (DDIM at 50 steps looks as good) or "
                       f"fewer images.")


def _labels(dataset: str, class_name: str, n: int, num_classes: int) -> torch.Tensor | None:
    names = CLASSES[dataset]
    if class_name == UNCONDITIONAL:
        return None
    if class_name == ALL_CLASSES:
        return torch.arange(n) % num_classes
    if class_name not in names:
        # reprlib: an API caller's megabyte string is not echoed back whole
        raise gr.Error(f"Unknown class {reprlib.repr(class_name)} for {dataset}: choose one of {', '.join(names)}, "
                       f"{ALL_CLASSES!r} or {UNCONDITIONAL!r}.")
    return torch.full((n,), names.index(class_name), dtype=torch.long)


# --------------------------------------------------------------------------- pictures

def to_grid(x: torch.Tensor, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """(B, C, H, W) floats in [-1, 1] -> one uint8 RGB grid (H', W', 3) at the images' own size, as near square
    as the count allows (4 images in a row beside their x_0 made an 8:1 strip 30 px tall on a phone)."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    b, _, h, w = x.shape
    cols = cols or math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, img in enumerate(x.permute(0, 2, 3, 1).numpy()):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = img
    return grid


def zoom(grid: np.ndarray, factor: int = ZOOM) -> np.ndarray:
    """Nearest-neighbour enlargement, so that 28- and 32-pixel images are big enough to see."""
    return grid.repeat(factor, 0).repeat(factor, 1)


def side_by_side(x_t: np.ndarray, x0: np.ndarray, gap: int = 3) -> np.ndarray:
    """x_t | x_0 grids with a white gap between them, zoomed for display."""
    spacer = np.full((x_t.shape[0], gap, 3), 255, dtype=np.uint8)
    return zoom(np.concatenate([x_t, spacer, x0], axis=1))


def frame_indices(n_steps: int, limit: int = MAX_FRAMES) -> set[int]:
    """Which of ``n_steps`` steps to store: evenly spread, always the first and the last."""
    if n_steps <= limit:
        return set(range(n_steps))
    return {round(i * (n_steps - 1) / (limit - 1)) for i in range(limit)}


def write_gif(frames: list[dict[str, Any]], final_hold: int = 8) -> str:
    """An animated GIF (x_t | x_0 at every stored step, the last one held) in GIF_DIR, where GIFs older than
    GIF_KEEP_S are deleted first."""
    images = [Image.fromarray(side_by_side(f["x_t"], f["x0"])) for f in frames]
    images += [images[-1]] * final_hold
    GIF_DIR.mkdir(exist_ok=True)
    for old in GIF_DIR.glob("diffusion-*.gif"):
        try:
            if time.time() - old.stat().st_mtime > GIF_KEEP_S:
                old.unlink()
        except OSError:  # another request deleted it first
            pass
    path = tempfile.NamedTemporaryFile(prefix="diffusion-", suffix=".gif", dir=GIF_DIR, delete=False).name
    images[0].save(path, save_all=True, append_images=images[1:], duration=80, loop=0, optimize=False)
    return path


def caption(frame: dict[str, Any], total: int) -> str:
    return (f"Step {frame['step'] + 1} of {total} (t = {frame['t']}): left the noisy sample after this step, "
            f"right the model's guess of the clean image x_0.")


# --------------------------------------------------------------------------- events

def generate(dataset: str = "Fashion-MNIST", class_name: str = "sneaker", sampler: str = "DDIM", steps: Any = 50,
             eta: Any = 0.0, guidance: Any = 3.0, seed: Any = 0, n_images: Any = 4
             ) -> Iterator[tuple[Any, ...]]:
    """Stream (live x_t | x_0 image, status, stored frames, scrub slider, scrub view, final grid, GIF, scrub
    caption)."""
    if not isinstance(dataset, str) or dataset not in MODELS:
        raise gr.Error(f"Unknown dataset {dataset!r}: choose one of {', '.join(MODELS)}.")
    kind, steps, eta, guidance, n_images, seed = check_settings(sampler, steps, eta, guidance, n_images, seed)
    model = load_model(MODELS[dataset])
    cfg = model.config
    labels = _labels(dataset, class_name, n_images, cfg.num_classes)
    check_work(steps, n_images, guided=labels is not None and guidance not in (0, 1))
    if steps > cfg.num_train_timesteps:
        raise gr.Error(f"This model was trained with {cfg.num_train_timesteps} noise levels: use at most that many steps.")
    if kind == "ddpm" and eta:
        gr.Warning("eta only applies to DDIM; DDPM always uses the posterior variance.")
    scheduler = make_scheduler(kind, cfg, steps)
    keep = frame_indices(scheduler.num_inference_steps, MAX_FRAMES)
    every = max(1, math.ceil(scheduler.num_inference_steps / LIVE_UPDATES))
    frames: list[dict[str, Any]] = []
    g = torch.Generator().manual_seed(seed)
    shape = (n_images, cfg.in_channels, cfg.image_size, cfg.image_size)
    total = scheduler.num_inference_steps
    skip = gr.skip()
    # clear the previous run's outputs first, so that nothing on screen mixes two runs (e.g. after Stop)
    yield skip, f"Sampling: {total} steps ...", [], gr.Slider(minimum=1, maximum=2, value=1), None, None, None, ""
    for st in sample_steps(model, scheduler, labels, shape=shape, guidance=guidance, eta=eta, generator=g):
        last = st.index == total - 1
        if st.index in keep or last:
            frames.append({"step": st.index, "t": st.timestep, "x_t": to_grid(st.x_t), "x0": to_grid(st.x0)})
        if st.index % every == 0 and not last:
            stored = frames[-1] if frames and frames[-1]["step"] == st.index else None  # long runs store few steps
            live = side_by_side(*((stored["x_t"], stored["x0"]) if stored else (to_grid(st.x_t), to_grid(st.x0))))
            yield (live, f"Sampling: step {st.index + 1} of {total} (t = {st.timestep}) ...", *[skip] * 6)
    final = frames[-1]
    what = ("unconditional image(s)" if labels is None else "images, one of each class" if class_name == ALL_CLASSES
            else f"{class_name} image(s)")
    status = (f"Done: {n_images} {what}, {sampler} {total} steps"
              f"{f', eta {eta:g}' if kind == 'ddim' else ''}"
              f"{f', guidance {guidance:g}' if labels is not None else ''}, seed {seed}. "
              f"{len(frames)} of the {total} steps stored for the slider.")
    slider = gr.Slider(minimum=1, maximum=max(2, total), value=total, step=1, interactive=True)
    view = side_by_side(final["x_t"], final["x0"])
    yield view, status, frames, slider, view, zoom(final["x_t"]), write_gif(frames), caption(final, total)


def scrub(frames: list[dict[str, Any]] | None, step: Any) -> tuple[np.ndarray, str]:
    """Sampler step ``step`` (1 = the first): x_t | x_0 side by side, and its caption. Runs of more than
    MAX_FRAMES steps keep an even spread of them; the nearest stored one is shown (the last for any step
    beyond it)."""
    if not frames:
        raise gr.Error("Generate a sample first; the slider then moves through its steps.")
    if step is None:  # the slider's box emptied while a step is typed: the view stays
        return gr.skip(), gr.skip()
    wanted = _number("Step", step, integer=False) - 1
    frame = min(frames, key=lambda f: abs(f["step"] - wanted))
    return side_by_side(frame["x_t"], frame["x0"]), caption(frame, frames[-1]["step"] + 1)


def update_classes(dataset: str) -> Any:
    choices = class_choices(dataset)
    return gr.Dropdown(choices=choices, value=choices[0])


# --------------------------------------------------------------------------- layout

def build() -> None:
    status = weights_status(*MODELS.values())
    if status:
        gr.Markdown(status)
    gr.Markdown("A class-conditional diffusion model turns noise into an image step by step. Pick a class and a "
                "sampler; the left image is the noisy sample x_t, the right one the model's current guess of the "
                "clean image x_0. Classifier-free guidance: 0 = unconditional, 1 = plain conditional, higher = "
                "more typical of the class.")
    dataset0 = default_dataset()
    with gr.Row():
        with gr.Column(scale=1):
            dataset = gr.Dropdown(list(MODELS), value=dataset0, label="Dataset")
            class_name = gr.Dropdown(class_choices(dataset0), value="sneaker" if dataset0 == "Fashion-MNIST"
                                     else "dog", label="Class", allow_custom_value=True)
            # allow_custom_value: the choices change with the dataset in the browser; an API caller's class
            # is checked by generate() against the dataset it names
            sampler = gr.Radio(list(SAMPLERS), value="DDIM", label="Sampler")
            steps = SliderInput(*LIMITS["steps"], value=50, step=1, label="Steps")
            eta = SliderInput(*LIMITS["eta"], value=0.0, step=0.05, label="eta (DDIM: 0 deterministic, 1 like DDPM)")
            guidance = SliderInput(*LIMITS["guidance"], value=3.0, step=0.25, label="Guidance scale")
            with gr.Row():
                seed = NumberInput(value=0, precision=0, label="Seed", minimum=0, maximum=MAX_SEED)
                n_images = SliderInput(*LIMITS["images"], value=4, step=1, label="Number of images")
            with gr.Row():
                run = gr.Button("Generate", variant="primary")
                stop = gr.Button("Stop")
            progress = gr.Markdown("Press Generate.")
        with gr.Column(scale=2):
            live = gr.Image(label="Sampling: x_t (left) and predicted x_0 (right)", type="numpy", interactive=False,
                            format="png", buttons=image_buttons())
            with gr.Row():
                # min_width: on a phone the two stack instead of shrinking to slivers side by side
                grid = gr.Image(label="Final samples", type="numpy", interactive=False, format="png", min_width=300,
                                buttons=image_buttons())
                gif = gr.Image(label="Trajectory (GIF)", type="filepath", interactive=False, min_width=300,
                               buttons=image_buttons())
    with gr.Accordion("Scrub through the steps", open=True):
        frames = gr.State([])
        scrubber = SliderInput(1, 2, value=1, step=1, label="Show step", interactive=True)
        view = gr.Image(label="x_t (left) and predicted x_0 (right) at the chosen step", type="numpy",
                        interactive=False, format="png", buttons=image_buttons())
        view_caption = gr.Markdown()
    dataset.change(update_classes, dataset, class_name, api_name="diffusion_classes")
    event = run.click(generate, [dataset, class_name, sampler, steps, eta, guidance, seed, n_images],
                      [live, progress, frames, scrubber, view, grid, gif, view_caption], api_name="diffusion_generate",
                      concurrency_limit=1, concurrency_id="diffusion")
    stop.click(None, None, progress, js="() => 'Stopped.'", cancels=[event])
    # .input: only a user's move scrubs; generate() sets the slider, the view and its caption itself.
    # Not preprocessed: a step typed into the box comes at each keystroke, and scrub() shows the nearest one
    # (the slider's range check answered 99 with an error while the box, once left, showed the last step);
    # always_last: a keystroke arriving while the previous one is scrubbed is not dropped
    scrubber.input(scrub, [frames, scrubber], [view, view_caption], api_name="diffusion_scrub",
                   show_progress="hidden", preprocess=False, trigger_mode="always_last")
