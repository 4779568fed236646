"""Train / evaluate the class-conditional DCGAN on Fashion-MNIST.

    python -m training.gan --threads 1                         # -> weights/gan-fashion
    python -m training.gan evaluate --weights weights/gan-fashion

Two optimizers (discriminator, then generator, every step), so the loop is its own: atomic checkpoints
with exact resume (same batches, same noise), a tqdm bar, a wall-clock budget. The released generator
is an exponential moving average of the trained one (the usual GAN stabilizer at sampling time).
``evaluate`` prints one JSON line: for 1,000 samples (100 per class) the class consistency, Frechet
distance and confidence histogram of the evaluation classifier (``training.gen_eval``).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

import weights
from models.generative import DCGAN, DCGANConfig, gan_losses
from training.common import CHECKPOINTS, cli, fail, from_pretrained, load_weights_folder, print_json, push_to_hub
from training.loop import EpochBatches, atomic_save, load_checkpoint, seed_everything
from training.vae import SAMPLES, load_images, load_run_info, sample_quality, save_run_info, to_unit

NAME = "gan-fashion"


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):  # BatchNorm running statistics: copied
        e.copy_(b)


def class_samples(model: DCGAN, n: int = SAMPLES, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples, an equal share per class (labels 0..9 cycled), from a seeded generator."""
    labels = torch.arange(n) % max(1, model.config.num_classes)
    images = model.sample(n, labels if model.conditional else None, generator=torch.Generator().manual_seed(seed))
    return images, labels


def evaluate_model(model: DCGAN, data: str | Path | None, samples: int = SAMPLES, seed: int = 0) -> dict[str, Any]:
    model.eval()
    images, labels = class_samples(model, samples, seed)
    quality = sample_quality(images, labels if model.conditional else None, data=data)
    return {**{k: round(v, 4) if isinstance(v, float) else v for k, v in quality.items()}, "samples": samples}


def train(args: argparse.Namespace) -> None:
    images, labels = load_images("train", args.data)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    if len(images) < args.batch_size:
        fail(f"{len(images)} training images are fewer than one batch ({args.batch_size})")
    model, history, step = run(args, images, labels)
    folder = Path(args.weights_out) if args.weights_out else weights.local_dir(NAME)
    weights.save(model, folder)
    model = from_pretrained(DCGAN, folder)  # measure what ships: the fp16-stored weights
    info = {"command": "python -m training.gan " + " ".join(sys.argv[1:]), "history": history, "steps_done": step,
            "n_images": len(images), "n_params": sum(p.numel() for p in model.parameters()),
            "batch_size": args.batch_size, "lr_g": args.lr_g, "lr_d": args.lr_d, "ema": args.ema,
            "threads": torch.get_num_threads()}
    save_run_info(Path(args.out) if args.out else CHECKPOINTS / NAME, info)
    metrics = evaluate_model(model, args.data)
    print_json(metrics)
    write_gan_card(folder, model, metrics, info)
    print(f"wrote {folder}", flush=True)
    if args.push_to_hub:
        print(push_to_hub(folder, args.push_to_hub))


def run(args: argparse.Namespace, images: torch.Tensor, labels: torch.Tensor
        ) -> tuple[DCGAN, list[dict[str, float]], int]:
    """The adversarial training loop on uint8 images (N, 1, 28, 28): resumes from ``args.out``'s checkpoint,
    stops at ``args.steps`` or after ``args.max_minutes``; returns the model with the EMA generator loaded,
    the per-checkpoint history and the steps done."""
    seed_everything(args.seed)
    config = DCGANConfig(noise_dim=args.noise_dim, num_classes=0 if args.unconditional else 10,
                         g_width=args.g_width, d_width=args.d_width)
    model = DCGAN(config)
    G, D = model.generator, model.discriminator
    ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr_d, betas=(0.5, 0.999))
    order = EpochBatches(len(images), args.batch_size, shuffle=True, drop_last=True, seed=args.seed)
    out = Path(args.out) if args.out else CHECKPOINTS / NAME
    ckpt = out / "checkpoint.pt"
    step, history = 0, []
    stats = {"d": 0.0, "g": 0.0, "real": 0.5, "fake": 0.5}  # running averages shown on the bar and logged
    if ckpt.exists() and not args.fresh:
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        step, history = state["step"], state["history"]
        stats = state.get("stats", stats)
        order.epoch, order.start, order.consumed = state["epoch"], state["batch_in_epoch"], state["batch_in_epoch"]
        torch.set_rng_state(state["rng"])
        tqdm.write(f"resumed from {ckpt} at step {step}")

    def save() -> None:
        atomic_save({"model": model.state_dict(), "ema": ema.state_dict(), "opt_g": opt_g.state_dict(),
                     "opt_d": opt_d.state_dict(), "step": step, "history": history, "epoch": order.epoch,
                     "batch_in_epoch": order.consumed, "rng": torch.get_rng_state(), "stats": stats,
                     "args": json.dumps(vars(args), default=str)}, ckpt)

    def batches():
        while True:
            for idx in order:
                order.consumed += 1
                yield idx
            order.epoch, order.start, order.consumed = order.epoch + 1, 0, 0

    print(f"{NAME}: generator {sum(p.numel() for p in G.parameters()) / 1e3:.0f}k + discriminator "
          f"{sum(p.numel() for p in D.parameters()) / 1e3:.0f}k parameters, {len(images)} images, {args.steps} steps "
          f"of {args.batch_size}, {torch.get_num_threads()} threads", flush=True)
    start = time.time()
    minutes_before = history[-1]["minutes"] if history else 0.0
    bar = tqdm(total=args.steps, initial=step, dynamic_ncols=True)
    it = batches()
    G.train(), D.train()
    while step < args.steps:
        idx = torch.as_tensor(next(it))
        x, y = to_unit(images[idx]), labels[idx] if config.num_classes else None
        fake = G(model.noise(len(idx)), y)
        d_real, d_fake = D(x, y), D(fake.detach(), y)
        d_loss, _ = gan_losses(d_real, d_fake)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        _, g_loss = gan_losses(d_real.detach(), D(fake, y))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        ema_update(ema, G, args.ema if step >= args.ema_start else 0.0)
        step += 1
        if not (math.isfinite(d_loss.item()) and math.isfinite(g_loss.item())):
            fail(f"the losses became non-finite at step {step}: lower the learning rates")
        for k, v in (("d", d_loss.item()), ("g", g_loss.item()), ("real", torch.sigmoid(d_real).mean().item()),
                     ("fake", torch.sigmoid(d_fake).mean().item())):
            stats[k] = v if step == 1 else 0.98 * stats[k] + 0.02 * v
        bar.update(1)
        bar.set_postfix(d=f"{stats['d']:.3f}", g=f"{stats['g']:.3f}", Dx=f"{stats['real']:.2f}",
                        DGz=f"{stats['fake']:.2f}")
        out_of_time = args.max_minutes is not None and (time.time() - start) / 60 > args.max_minutes
        if step % args.eval_every == 0 or step == args.steps or out_of_time:
            history.append({"step": step, "minutes": minutes_before + (time.time() - start) / 60,
                            **{k: round(v, 4) for k, v in stats.items()}})
            bar.write(" ".join(f"{k}={v:.4g}" for k, v in history[-1].items()))
            save()
            if out_of_time:
                break
    bar.close()

    model.generator.load_state_dict(ema.state_dict())
    return model.eval(), history, step


def write_gan_card(folder: Path, model: DCGAN, metrics: dict[str, Any], info: dict[str, Any]) -> None:
    c, history, step = model.config, info["history"], info["steps_done"]
    minutes = history[-1]["minutes"] if history else 0.0
    card_metrics = {**({"class_consistency": metrics["class_consistency"]} if "class_consistency" in metrics else {}),
                    "fd_1000_samples": metrics["fd"], "fd_1000_real_train_images": metrics["fd_real"],
                    "mean_confidence": metrics["mean_confidence"], "train_minutes": round(minutes, 2)}
    table = "\n".join(f"| {h['step']} | {h['minutes']:.1f} | {h['d']:.3f} | {h['g']:.3f} | {h['real']:.2f} | "
                      f"{h['fake']:.2f} |" for h in history)
    extra = (
        f"Measured on 1,000 samples (100 per class, seed 0) of the released (EMA) generator. `class_consistency`: "
        f"the share the evaluation classifier (`weights/evalnet-fashion`, `training/gen_eval.py`) assigns to the "
        f"requested class. `fd_1000_samples`: Frechet distance to the 10,000 test images in that classifier's "
        f"features; `fd_1000_real_train_images`: the same for 1,000 real training images (the floor at this "
        f"sample size). Confidence histogram (top-class probability, 10 bins over [0, 1]): "
        f"{metrics['confidence_histogram']}; predicted classes: {metrics['predicted_class_counts']}.\n\n"
        f"Training: {step} steps of batch {info['batch_size']} ({step * info['batch_size'] / info['n_images']:.1f} "
        f"epochs of the {info['n_images']:,} training images), Adam (beta1 0.5) lr {info['lr_g']} (G) / "
        f"{info['lr_d']} (D), non-saturating loss, spectral norm in D, generator EMA {info['ema']}; {minutes:.1f} "
        f"min of wall time on a shared CPU ({platform.processor() or platform.machine()}, {info['threads']} torch "
        f"thread(s), fp32), {info['n_params'] / 1e3:.0f}k parameters (generator and discriminator), stored as "
        f"fp16.{' ' + info['note'] if info.get('note') else ''}\n\n| step | minutes | D loss | G loss | D(x) | D(G(z)) |\n|---|---|---|---|---|---|\n{table}\n")
    description = (f"{'Class-conditional ' if c.num_classes else ''}DCGAN: a generator (noise {c.noise_dim}-d"
                   f"{f' + {c.embed_dim}-d class embedding' if c.num_classes else ''} -> 7x7x{2 * c.g_width} -> two "
                   f"stride-2 transposed convs with BatchNorm/ReLU -> 28x28) against a strided-conv discriminator "
                   f"with spectral norm, LeakyReLU{' and a projection class head' if c.num_classes else ''}, "
                   f"trained with the non-saturating GAN loss on Fashion-MNIST.")
    weights.write_card(folder, NAME, description=description, metrics=card_metrics,
                       dataset="fashion_mnist", dataset_name="Fashion-MNIST", task_type="unconditional-image-generation",
                       command=info["command"], extra=extra,
                       tags=["gan", "dcgan", "image-generation", "fashion-mnist"])


def evaluate_command(args: argparse.Namespace) -> None:
    folder = Path(args.weights)
    model = load_weights_folder(DCGAN, folder)
    if args.samples < 2:
        fail("--samples must be at least 2")
    info = load_run_info(args.update_card) if args.update_card else None
    metrics = evaluate_model(model, args.data, args.samples)
    print_json({"weights": str(folder), "config": asdict(model.config), **metrics})
    if info:
        write_gan_card(folder, model, metrics, info)


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr-g", type=float, default=2e-4)
    p.add_argument("--lr-d", type=float, default=2e-4)
    p.add_argument("--noise-dim", type=int, default=64)
    p.add_argument("--g-width", type=int, default=64)
    p.add_argument("--d-width", type=int, default=32)
    p.add_argument("--unconditional", action="store_true", help="no class input")
    p.add_argument("--ema", type=float, default=0.99, help="decay of the generator's moving average (time constant 1/(1-decay) steps: keep it well below the run length)")
    p.add_argument("--ema-start", type=int, default=200, help="steps before the average starts (copied until then)")
    p.add_argument("--data", default=None, help="folder with the Fashion-MNIST idx files (default: Debian's)")
    p.add_argument("--limit", type=int, default=None, help="use only this many training images (smoke runs)")
    p.add_argument("--eval-every", type=int, default=250, help="steps between checkpoints")
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--out", default=None, help="checkpoint folder")
    p.add_argument("--weights-out", default=None, help="weights folder (default weights/gan-fashion)")


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--update-card", metavar="CHECKPOINT_DIR", default=None,
                   help="rewrite the weights folder's model card with these measurements (run info from the folder)")


def main() -> None:
    args = cli(__doc__.splitlines()[0], add_train_args, add_eval_args)
    if args.command == "evaluate":
        evaluate_command(args)
    else:
        if args.steps < 1 or args.batch_size < 2 or not 0 <= args.ema < 1:
            fail("need --steps >= 1, --batch-size >= 2 and 0 <= --ema < 1")
        train(args)


if __name__ == "__main__":
    main()
