"""Train and evaluate the class-conditional diffusion models (eps or v prediction, classifier-free guidance).

    python -m training.diffusion --dataset fashion                      # writes weights/ddpm-fashion
    python -m training.diffusion --dataset cifar10                      # ~80 min on 2 CPU threads (bf16)
    python -m training.diffusion evaluate --weights weights/ddpm-fashion

``evaluate`` prints one JSON line: ``class_consistency`` (the share of guided DDIM-50 samples, 100 per
class, that the evaluation classifier of ``training.gen_eval`` assigns to the requested class) and ``fd``
(Frechet distance to the real test images in that classifier's features) for DDPM-1000, DDIM-50, DDIM-20.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import weights
from models.diffusion import UNet, UNetConfig
from models.schedulers import NoiseSchedule, make_scheduler, sample
from training import gen_eval
from training.common import CHECKPOINTS, check_weights_folder, cli, fail, load_weights_folder, print_json, push_to_hub
from training.loop import TrainConfig, fit, precision


@dataclass
class Recipe:
    model: dict[str, Any]
    steps: int
    batch_size: int
    lr: float
    warmup: int = 200
    ema: float = 0.999
    label_dropout: float = 0.1    # share of training labels replaced by the null class (for guidance)
    flip: bool = False
    max_minutes: float | None = None
    eval_every: int = 250
    bf16: bool = False            # bf16 autocast (where the device runs it fast: CUDA, CPUs with AVX-512 bf16)


RECIPES = {
    # Sized for ~40 minutes on two CPU threads in bf16 (~0.24 s per step; 22 epochs): a 2x2 space-to-depth stem,
    # so the U-Net's levels are 14x14 (32 channels) and 7x7 (64, with attention), ~0.7M parameters. v-prediction:
    # with eps, DDIM's deterministic samples came out striped (see models.schedulers).
    "fashion": Recipe(model=dict(image_size=28, in_channels=1, patch_size=2, base_channels=32, channel_mults=[1, 2],
                                 num_res_blocks=1, attn_resolutions=[7], dropout=0.0, beta_schedule="cosine",
                                 prediction_type="v_prediction", default_guidance=3.0),
                      steps=10000, batch_size=128, lr=2e-3, max_minutes=60, eval_every=500, bf16=True),
    # Sized for ~75 minutes on two CPU threads in bf16 (~0.75 s per step of 128; 15 epochs): the same 2x2
    # space-to-depth stem, levels 16x16 (64 channels), 8x8 (128, attention) and 4x4 (128, attention), 4.5M
    # parameters. Measured here: channels-last made this U-Net 1.45x slower (GroupNorm), dropout 0.1 another 7%.
    "cifar10": Recipe(model=dict(image_size=32, in_channels=3, patch_size=2, base_channels=64, channel_mults=[1, 2, 2],
                                 num_res_blocks=1, attn_resolutions=[8], dropout=0.0, beta_schedule="cosine",
                                 prediction_type="v_prediction", default_guidance=3.0),
                      steps=6000, batch_size=128, lr=1e-3, max_minutes=85, eval_every=500, flip=True, bf16=True),
}
WEIGHT_NAMES = {"fashion": "ddpm-fashion", "cifar10": "ddpm-cifar10"}


# --------------------------------------------------------------------------- training pieces

class Images:
    """Indices in, (images in [-1, 1], labels) out; optional horizontal flips."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, flip: bool = False):
        self.images, self.labels, self.flip = images, labels, flip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        x = gen_eval.to_signed(self.images[idx])
        if self.flip:
            x = torch.where((torch.rand(len(idx)) < 0.5).view(-1, 1, 1, 1), x.flip(3), x)
        return x, self.labels[idx]


class Trainee(nn.Module):
    """The network being trained and its exponential moving average, in one module so the loop's
    checkpoints hold both (exact resume). ``forward(batch)`` is the DDPM loss."""

    def __init__(self, net: UNet, ema_decay: float, label_dropout: float):
        super().__init__()
        self.net, self.ema = net, copy.deepcopy(net).requires_grad_(False).eval()
        self.ema_decay, self.label_dropout = ema_decay, label_dropout
        self.schedule = NoiseSchedule.from_config(net.config)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> "Trainee":
        super().train(mode)
        self.ema.eval()
        return self

    def forward(self, x0: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        t = torch.randint(0, self.schedule.num_train_timesteps, (len(x0),), device=x0.device)
        noise = torch.randn_like(x0)
        drop = torch.rand(len(labels), device=labels.device) < self.label_dropout
        labels = torch.where(drop, torch.full_like(labels, self.net.null_class), labels)
        target = self.schedule.training_target(x0, noise, t)
        return F.mse_loss(self.net(self.schedule.add_noise(x0, noise, t), t, labels), target)

    @torch.no_grad()
    def update_ema(self) -> None:
        # the usual warm-up: early averages forget the random initialization quickly
        self.updates += 1
        n = int(self.updates)
        decay = min(self.ema_decay, (1 + n) / (10 + n))
        for e, p in zip(self.ema.parameters(), self.net.parameters()):
            e.lerp_(p, 1 - decay)
        for e, b in zip(self.ema.buffers(), self.net.buffers()):
            e.copy_(b)


@torch.no_grad()
def denoising_loss(net: UNet, schedule: NoiseSchedule, x0: torch.Tensor, labels: torch.Tensor,
                   seed: int = 0) -> float:
    """The training loss (eps or v) with fixed timesteps and noise (a comparable validation number)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, schedule.num_train_timesteps, (len(x0),), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    device = next(net.parameters()).device
    total = 0.0
    for chunk in zip(x0.split(256), labels.split(256), t.split(256), noise.split(256)):
        xs, ys, ts, ns = (c.to(device) for c in chunk)
        total += float(F.mse_loss(net(schedule.add_noise(xs, ns, ts), ts, ys), schedule.training_target(xs, ns, ts),
                                  reduction="sum"))
    return total / noise.numel()


def train(args: argparse.Namespace) -> None:
    recipe = RECIPES[args.dataset]
    steps = args.steps or recipe.steps
    batch_size = args.batch_size or recipe.batch_size
    lr = args.lr or recipe.lr
    max_minutes = args.max_minutes if args.max_minutes is not None else recipe.max_minutes
    bf16 = recipe.bf16 if args.bf16 is None else args.bf16
    if not args.no_eval and not weights.available(f"evalnet-{args.dataset}"):
        fail(f"the evaluation classifier evalnet-{args.dataset} is not trained: run `python -m training.gen_eval "
             f"--dataset {args.dataset}` first, or pass --no-eval")
    try:
        images, labels = gen_eval.load_dataset(args.dataset, "train", args.data)
    except (OSError, ValueError) as e:
        fail(f"could not read {args.dataset}: {e}")
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    val_idx, train_idx = perm[:512], perm[512:]
    if args.limit:
        train_idx = train_idx[:args.limit]
    train_set = Images(images[train_idx], labels[train_idx], flip=recipe.flip)
    val_x, val_y = gen_eval.to_signed(images[val_idx]), labels[val_idx]

    torch.manual_seed(args.seed)
    config = UNetConfig(**recipe.model, classes=gen_eval.class_names(args.dataset))
    trainee = Trainee(UNet(config), recipe.ema, recipe.label_dropout)
    out_dir = Path(args.checkpoints) if args.checkpoints else CHECKPOINTS / f"diffusion-{args.dataset}"
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=0.0, schedule="cosine",
                      warmup_steps=min(recipe.warmup, steps // 10), min_lr_ratio=0.1, grad_clip=1.0, bf16=bf16,
                      eval_every=min(recipe.eval_every, steps), monitor="val_loss_ema", mode="min",
                      max_minutes=max_minutes, seed=args.seed, out_dir=str(out_dir), resume=not args.fresh)

    def evaluate(m: Trainee) -> dict[str, float]:
        return {"val_loss_ema": denoising_loss(m.ema, m.schedule, val_x, val_y),
                "val_loss": denoising_loss(m.net, m.schedule, val_x, val_y)}

    n_params = sum(p.numel() for p in trainee.net.parameters())
    print(f"diffusion-{args.dataset}: {n_params / 1e6:.2f}M parameters, {len(train_set)} images, {steps} steps of "
          f"{batch_size}, {torch.get_num_threads()} threads", flush=True)
    result = fit(trainee, train_set, lambda m, b: m(*b), cfg, evaluate=evaluate, collate_fn=train_set.collate,
                 on_step=lambda step, loss: trainee.update_ema())
    folder = Path(args.weights_out) if args.weights_out else weights.local_dir(WEIGHT_NAMES[args.dataset])
    weights.save(trainee.ema.eval(), folder)
    (folder / "training.json").unlink(missing_ok=True)
    info = {"steps_done": result.steps_done, "steps": steps, "batch_size": batch_size, "lr": lr,
            "minutes": round(result.minutes, 1), "best_step": result.best_step, "params_m": round(n_params / 1e6, 2),
            "val_loss_ema": result.best_metric, "images": len(train_set), "threads": torch.get_num_threads(),
            "precision": precision(bf16),
            "command": "python -m training.diffusion " + " ".join(a for a in sys.argv[1:] if a != "--no-eval")}
    (out_dir / "train_info.json").write_text(json.dumps(info, indent=1))
    print(f"wrote {folder} ({result.steps_done} steps in {result.minutes:.1f} min, best EMA val loss "
          f"{result.best_metric:.4f} at step {result.best_step})", flush=True)
    if not args.no_eval:
        metrics = evaluate_folder(folder, samples=args.samples, ddpm_samples=args.ddpm_samples)
        print_json(metrics)
        write_card(folder, args.dataset, metrics, info)
    if args.push_to_hub:
        print(push_to_hub(folder, args.push_to_hub))


# --------------------------------------------------------------------------- evaluation

def generate(model: UNet, sampler: str, steps: int, labels: torch.Tensor, guidance: float, seed: int,
             eta: float = 0.0, batch_size: int = 250, desc: str = "") -> torch.Tensor:
    """Samples in [-1, 1] for ``labels``, in batches, with a progress bar."""
    c, s = model.config.in_channels, model.config.image_size
    out = []
    g = torch.Generator().manual_seed(seed)
    bar = tqdm(total=len(labels), desc=desc or f"{sampler}-{steps}", leave=False)
    for chunk in labels.split(batch_size):
        scheduler = make_scheduler(sampler, model.config, steps)
        out.append(sample(model, scheduler, chunk, shape=(len(chunk), c, s, s), guidance=guidance, eta=eta,
                          generator=g))
        bar.update(len(chunk))
    bar.close()
    return torch.cat(out)


def dataset_of(in_channels: int) -> str:
    """Which dataset a U-Net of this many image channels was trained on."""
    return "fashion" if in_channels == 1 else "cifar10"


def evaluate_folder(folder: str | Path, samples: int = 1000, ddpm_samples: int | None = None,
                    guidance: float | None = None, seed: int = 0) -> dict[str, Any]:
    """class_consistency (DDIM-50, ``samples`` evenly over the classes) and fd for DDPM-1000, DDIM-50, DDIM-20."""
    model = load_weights_folder(UNet, folder)
    cfg = model.config
    dataset = dataset_of(cfg.in_channels)
    evaluator = gen_eval.load_evaluator(dataset)
    w = cfg.default_guidance if guidance is None else guidance
    real = gen_eval.real_features(dataset, 10000)
    labels = torch.arange(samples) % cfg.num_classes
    metrics: dict[str, Any] = {"weights": str(folder), "dataset": dataset, "guidance": w, "samples": samples}
    times = {}
    for sampler, steps, n in (("ddim", 50, samples), ("ddim", 20, samples),
                              ("ddpm", 1000, ddpm_samples or samples)):
        start = time.time()
        x = generate(model, sampler, steps, labels[:n], w, seed)
        times[f"{sampler}{steps}"] = round(time.time() - start, 1)
        key = f"{sampler}{steps}"
        metrics[f"fd_{key}"] = round(gen_eval.frechet_distance(real, gen_eval.features(x, evaluator)), 3)
        if n != samples:
            metrics[f"samples_{key}"] = n
        if key == "ddim50":
            metrics["class_consistency"] = round(gen_eval.class_consistency(x, labels[:n], evaluator), 4)
            metrics["confidence_histogram"] = gen_eval.confidence_histogram(x, evaluator)
            if ddpm_samples and ddpm_samples != samples:  # the same sample count as DDPM-1000, for comparison
                metrics[f"fd_ddim50_n{ddpm_samples}"] = round(gen_eval.frechet_distance(
                    real, gen_eval.features(x[:ddpm_samples], evaluator)), 3)
        if key == "ddpm1000":
            metrics["class_consistency_ddpm1000"] = round(gen_eval.class_consistency(x, labels[:n], evaluator), 4)
    metrics["fd_test_vs_test"] = test_vs_test_fd(dataset, evaluator, samples)
    metrics["seconds"] = times
    return metrics


def test_vs_test_fd(dataset: str, evaluator: nn.Module, samples: int) -> float:
    """The floor: FD between 5,000 real test images and ``samples`` others, drawn at random (the CIFAR-10
    test set is stored class by class, so its two halves would hold different classes)."""
    test_images, _ = gen_eval.load_dataset(dataset, "test")
    real = gen_eval.to_signed(test_images)[torch.randperm(len(test_images), generator=torch.Generator().manual_seed(0))]
    return round(gen_eval.frechet_distance(gen_eval.features(real[:5000], evaluator),
                                           gen_eval.features(real[5000:5000 + samples], evaluator)), 3)


def write_card(folder: Path, dataset: str, metrics: dict[str, Any], info: dict[str, Any]) -> None:
    model_cfg = json.loads((folder / "config.json").read_text())
    n_ddpm = metrics.get("samples_ddpm1000", metrics["samples"])
    card_metrics = {"class_consistency": metrics["class_consistency"], "fd_ddim50": metrics["fd_ddim50"],
                    "fd_ddim20": metrics["fd_ddim20"], "fd_ddpm1000": metrics["fd_ddpm1000"],
                    "train_minutes": info["minutes"]}
    extra = (
        f"Measured with `python -m training.diffusion evaluate --weights {folder.relative_to(folder.parent.parent)}"
        f"{' --ddpm-samples ' + str(n_ddpm) if n_ddpm != metrics['samples'] else ''}` against the evaluation "
        f"classifier `evalnet-{dataset}` (a separate small CNN, see its card). class_consistency: share of "
        f"{metrics['samples']} guided samples (guidance {metrics['guidance']}, DDIM 50 steps, eta 0, "
        f"{metrics['samples'] // 10} per class) assigned to the requested class. fd: Frechet distance between "
        f"the classifier's penultimate features of the 10,000 test images and of the samples "
        f"({metrics['samples']} for DDIM-50/20, {n_ddpm} for DDPM-1000, which costs 20x DDIM-50 on the CPU"
        + (f"; DDIM-50 on its first {n_ddpm} samples: {metrics.get(f'fd_ddim50_n{n_ddpm}')}" if n_ddpm != metrics['samples'] else "")
        + f"). {metrics['samples']} real test images against 5,000 others, drawn at random, give "
        f"{metrics['fd_test_vs_test']} (the floor). "
        f"DDPM-1000 class consistency: {metrics.get('class_consistency_ddpm1000')}. Confidence histogram of the "
        f"DDIM-50 samples (10 bins over [0, 1]): {metrics['confidence_histogram']}. Sampling wall times (s): "
        f"{metrics['seconds']}.\n\n"
        f"Training: {info['steps_done']} of {info['steps']} steps of batch {info['batch_size']} "
        f"({info['steps_done'] * info['batch_size'] / info['images']:.1f} epochs of {info['images']} images), AdamW "
        f"lr {info['lr']} (warm-up, cosine), label dropout 0.1 (null class), EMA of the weights (shipped), "
        f"{info['minutes']} min on the CPU ({platform.processor() or platform.machine()}, {info['threads']} torch "
        f"thread(s), {info.get('precision', 'fp32')}), {info['params_m']}M parameters. "
        f"Config: `{json.dumps(model_cfg)}`"
        + (f"\n\n{info['notes']}" if info.get("notes") else ""))
    weights.write_card(
        folder, WEIGHT_NAMES[dataset],
        description=(f"Class-conditional DDPM ({model_cfg.get('prediction_type', 'epsilon').replace('_', '-')}, "
                     f"{model_cfg['beta_schedule']} schedule, "
                     f"{model_cfg['num_train_timesteps']} steps) with classifier-free guidance, a U-Net with "
                     f"time and class embeddings, trained from scratch on "
                     f"{'Fashion-MNIST' if dataset == 'fashion' else 'CIFAR-10'}. Sample with DDPM or DDIM "
                     f"(`models.schedulers`)."),
        metrics=card_metrics, dataset="fashion_mnist" if dataset == "fashion" else "cifar10",
        dataset_name="Fashion-MNIST" if dataset == "fashion" else "CIFAR-10", task_type="unconditional-image-generation",
        command=info["command"], extra=extra, tags=["diffusion", "ddpm", "ddim", "classifier-free-guidance"])


def evaluate_command(args: argparse.Namespace) -> None:
    folder = check_weights_folder(args.weights)
    if args.samples < 10 or (args.ddpm_samples is not None and not 2 <= args.ddpm_samples <= args.samples):
        fail("--samples must be at least 10 (one per class) and --ddpm-samples from 2 to --samples (the DDPM "
             "samples are the first of the DDIM ones' classes)")
    info_path = None
    if args.write_card:  # checked before the (long) evaluation, not after it
        in_channels = json.loads((folder / "config.json").read_text()).get("in_channels")  # no second load
        info_path = CHECKPOINTS / f"diffusion-{dataset_of(in_channels)}" / "train_info.json"
        if not info_path.is_file():
            fail(f"{info_path} not found: --write-card needs the training run's record")
    try:
        metrics = evaluate_folder(folder, args.samples, args.ddpm_samples, args.guidance, args.seed)
    except weights.WeightsError as e:
        fail(str(e))
    print_json(metrics)
    if info_path is not None:
        write_card(folder, metrics["dataset"], metrics, json.loads(info_path.read_text()))


def main() -> None:
    def train_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", choices=sorted(RECIPES), default="fashion")
        p.add_argument("--data", default=None, help="dataset folder (default: the standard location)")
        p.add_argument("--steps", type=int, default=None)
        p.add_argument("--batch-size", type=int, default=None)
        p.add_argument("--lr", type=float, default=None)
        p.add_argument("--max-minutes", type=float, default=None)
        p.add_argument("--limit", type=int, default=None, help="use only this many training images (smoke tests)")
        p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                       help="bf16 autocast (default: the recipe's; a no-op where the device would run it slower)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
        p.add_argument("--checkpoints", default=None, help="checkpoint folder (default checkpoints/diffusion-DATASET)")
        p.add_argument("--weights-out", default=None, help="weights folder (default weights/ddpm-DATASET)")
        p.add_argument("--samples", type=int, default=1000)
        p.add_argument("--ddpm-samples", type=int, default=50,
                       help="DDPM-1000 samples in the evaluation after training (each costs 20 DDIM-50 samples)")
        p.add_argument("--no-eval", action="store_true", help="skip the sample-quality evaluation")

    def eval_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--weights", required=True)
        p.add_argument("--samples", type=int, default=1000, help="DDIM samples (100 per class by default)")
        p.add_argument("--ddpm-samples", type=int, default=None, help="DDPM-1000 samples (default: --samples)")
        p.add_argument("--guidance", type=float, default=None, help="default: the model's default_guidance")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--write-card", action="store_true", help="rewrite the folder's model card with the result")

    args = cli(__doc__.splitlines()[0], train_args, eval_args)
    if args.command == "evaluate":
        evaluate_command(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
