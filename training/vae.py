"""Train / evaluate the convolutional VAEs on Fashion-MNIST.

    python -m training.vae --threads 1                             # beta=1, 16-d latent -> weights/vae-fashion
    python -m training.vae --beta 4 --latent-dim 2 --threads 1     # beta-VAE, 2-d latent -> weights/beta-vae-fashion
    python -m training.vae evaluate --weights weights/vae-fashion

``evaluate`` prints one JSON line: the test negative ELBO (nats per image, beta=1 whatever beta trained
the model: lower is better), its reconstruction and KL parts, an importance-weighted log-likelihood bound,
the reconstruction MSE, and for 1,000 samples the Frechet distance in the evaluation classifier's features
and that classifier's confidence histogram (``training.gen_eval``).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import weights
from models.generative import VAE, VAEConfig, bernoulli_nll, gaussian_kl
from training.common import CHECKPOINTS, cli, fail, from_pretrained, load_weights_folder, print_json, push_to_hub
from training.loop import TrainConfig, fit

SAMPLES = 1000  # generated images per quality measurement (the diffusion card's count)


# --------------------------------------------------------------------------- data

def load_images(split: str, root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split`` as uint8 (N, 1, 28, 28) and int64 labels; a clear CLI error when unreadable."""
    from training.fashion import load_fashion
    try:
        images, labels = load_fashion(split, root)
    except (OSError, ValueError) as e:
        fail(f"could not read Fashion-MNIST: {e}")
    return images.unsqueeze(1), labels


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1] (the VAE's and GAN's pixel range)."""
    return images.float().div(255)


class Images:
    """Indices in, float batches out (the whole uint8 set stays in memory: 47 MB for 60k images)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> Any:
        idx = torch.as_tensor(indices)
        x = to_unit(self.images[idx])
        return x if self.labels is None else (x, self.labels[idx])


def split_train(images: torch.Tensor, labels: torch.Tensor, val_size: int = 5000
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed 5,000-image validation split of the training set (the test set is used once, for the card)."""
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    val, train = perm[:val_size], perm[val_size:]
    return images[train], labels[train], images[val], labels[val]


# --------------------------------------------------------------------------- metrics

@torch.no_grad()
def elbo_report(model: VAE, images: torch.Tensor, iw_samples: int = 0, seed: int = 0,
                batch_size: int = 500) -> dict[str, float]:
    """Per-image averages over ``images`` (uint8): negative ELBO = recon + KL (nats, beta=1), recon
    BCE and KL separately (one posterior sample each, seeded), MSE per pixel of the deterministic
    reconstruction, and the importance-weighted bound -log p(x) with ``iw_samples`` samples."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    sums = {"recon": 0.0, "kl": 0.0, "mse": 0.0, "iw": 0.0}
    device = next(model.parameters()).device
    for chunk in images.split(batch_size):
        x = to_unit(chunk).to(device)
        mu, logvar = model.encode(x)
        z = model.reparameterize(mu, logvar, generator=g)
        sums["recon"] += float(bernoulli_nll(model.decode_logits(z), x).sum())
        sums["kl"] += float(gaussian_kl(mu, logvar).sum())
        sums["mse"] += float(F.mse_loss(model.decode(mu), x, reduction="none").flatten(1).mean(1).sum())
        if iw_samples:
            sums["iw"] += float(-model.log_likelihood(x, iw_samples, generator=g).sum())
    n = len(images)
    out = {"neg_elbo": sums["recon"] / n + sums["kl"] / n, "recon_bce": sums["recon"] / n, "kl": sums["kl"] / n,
           "recon_mse": sums["mse"] / n}
    if iw_samples:
        out[f"nll_iw{iw_samples}"] = sums["iw"] / n
    return out


_REAL: dict[str, torch.Tensor] = {}


def sample_quality(samples: torch.Tensor, labels: torch.Tensor | None = None,
                   data: str | Path | None = None) -> dict[str, Any]:
    """Quality of generated images (float [0, 1], (N, 1, 28, 28)) judged by the evaluation classifier:
    Frechet distance to the 10,000 real test images in its features, its confidence histogram, the
    spread of predicted classes, and (for conditional samples) class consistency.

    ``fd_real`` is the same distance for as many *real* training images: the floor that sampling noise
    alone gives at this sample size, so ``fd`` reads against it."""
    from training.gen_eval import (class_consistency, confidence_histogram, features, frechet_distance,
                                   load_evaluator, predict_logits, real_features)
    try:
        evaluator = load_evaluator("fashion")
    except weights.WeightsError as e:
        fail(f"{e} (the evaluation classifier is needed for sample quality)")
    key = str(data)
    if key not in _REAL:
        _REAL[key] = real_features("fashion", root=data)
    floor = f"{key} train {len(samples)}"  # the real-vs-real floor, with as many training images as samples
    if floor not in _REAL:
        train_images, _ = load_images("train", data)
        pick = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(1))[:len(samples)]
        _REAL[floor] = features(to_unit(train_images[pick]) * 2 - 1, evaluator)
    signed = samples * 2 - 1  # the evaluator reads [-1, 1]
    pred = predict_logits(signed, evaluator).softmax(1)
    counts = torch.bincount(pred.argmax(1), minlength=pred.shape[1]).tolist()
    out: dict[str, Any] = {
        "fd": frechet_distance(_REAL[key], features(signed, evaluator)),
        "fd_real": frechet_distance(_REAL[key], _REAL[floor]),
        "mean_confidence": float(pred.amax(1).mean()),
        "confidence_histogram": confidence_histogram(signed, evaluator),
        "predicted_class_counts": counts,
    }
    if labels is not None:
        out["class_consistency"] = class_consistency(signed, labels, evaluator)
    return out


def evaluate_model(model: VAE, data: str | Path | None, samples: int = SAMPLES, iw_samples: int = 32,
                   seed: int = 0) -> dict[str, Any]:
    test_images, _ = load_images("test", data)
    report = {k: round(v, 4) for k, v in elbo_report(model, test_images, iw_samples, seed).items()}
    generated = model.sample(samples, generator=torch.Generator().manual_seed(seed))
    quality = sample_quality(generated, data=data)
    return {**report, **{k: round(v, 3) if isinstance(v, float) else v for k, v in quality.items()},
            "samples": samples, "test_images": len(test_images)}


# --------------------------------------------------------------------------- train

def default_name(beta: float) -> str:
    return "vae-fashion" if beta == 1 else "beta-vae-fashion"


def train(args: argparse.Namespace) -> None:
    images, labels = load_images("train", args.data)
    train_images, _, val_images, _ = split_train(images, labels)
    if args.limit:
        train_images = train_images[:args.limit]
    train_set = Images(train_images)
    name = args.name or default_name(args.beta)

    torch.manual_seed(args.seed)
    model = VAE(VAEConfig(latent_dim=args.latent_dim, beta=args.beta, width=args.width, hidden=args.hidden))
    out_dir = Path(args.out) if args.out else CHECKPOINTS / name
    steps_per_epoch = len(train_set) // args.batch_size
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=0.0,
                      schedule="cosine", warmup_steps=min(200, args.steps // 10), min_lr_ratio=0.05,
                      grad_clip=None, bf16=False, eval_every=args.eval_every or steps_per_epoch,
                      monitor="val_loss", max_minutes=args.max_minutes, seed=args.seed, out_dir=str(out_dir),
                      resume=not args.fresh)

    def evaluate(m: VAE) -> dict[str, float]:
        r = elbo_report(m, val_images)
        return {"val_loss": r["recon_bce"] + m.config.beta * r["kl"], "val_neg_elbo": r["neg_elbo"],
                "val_kl": r["kl"]}

    n_params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n_params / 1e6:.2f}M parameters, beta {args.beta}, latent {args.latent_dim}, "
          f"{len(train_set)} images, {args.steps} steps of {args.batch_size}, {torch.get_num_threads()} threads",
          flush=True)
    result = fit(model, train_set, lambda m, x: m.elbo(x).loss, cfg, evaluate=evaluate,
                 collate_fn=train_set.collate)
    model.eval()
    folder = Path(args.weights_out) if args.weights_out else weights.local_dir(name)
    weights.save(model, folder)
    model = from_pretrained(VAE, folder)  # measure what ships: the fp16-stored weights
    info = {"command": "python -m training.vae " + " ".join(sys.argv[1:]), "history": result.history,
            "steps_done": result.steps_done, "minutes": total_minutes(result.history), "n_params": n_params,
            "steps_per_epoch": steps_per_epoch, "batch_size": args.batch_size, "lr": args.lr,
            "iw_samples": args.iw_samples, "threads": torch.get_num_threads()}
    save_run_info(out_dir, info)
    metrics = evaluate_model(model, args.data, iw_samples=args.iw_samples)
    print_json(metrics)
    write_vae_card(folder, model, metrics, info)
    print(f"wrote {folder}", flush=True)
    if args.push_to_hub:
        print(push_to_hub(folder, args.push_to_hub))


def total_minutes(history: list[dict[str, float]]) -> float:
    """Wall time over all resumed segments (each segment's history restarts its clock at 0)."""
    total, last = 0.0, 0.0
    for h in history:
        if h["minutes"] < last:
            total += last
        last = h["minutes"]
    return round(total + last, 2)


def segments(history: list[dict[str, float]]) -> str:
    """' in N runs ...' when training was interrupted (time budget) and resumed from its checkpoint."""
    n = 1 + sum(b["minutes"] < a["minutes"] for a, b in zip(history, history[1:]))
    return f" in {n} runs of the same command (each resumed from the checkpoint)" if n > 1 else ""


def save_run_info(out_dir: Path, info: dict[str, Any]) -> None:
    """What the model card says about training, kept beside the checkpoint so ``evaluate --update-card``
    can rewrite the card after re-measuring (e.g. with a retrained evaluation classifier)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".card.json.tmp"
    tmp.write_text(json.dumps(info, indent=1))
    tmp.replace(out_dir / "card.json")


def load_run_info(out_dir: str | Path) -> dict[str, Any]:
    """The training facts ``save_run_info`` kept in a checkpoint folder; a clear CLI error without them."""
    path = Path(out_dir) / "card.json"
    if not path.is_file():
        fail(f"{path} not found: --update-card needs the checkpoint folder of the run that trained the model")
    return json.loads(path.read_text())


def write_vae_card(folder: Path, model: VAE, metrics: dict[str, Any], info: dict[str, Any]) -> None:
    c = model.config
    iw_n = info["iw_samples"]
    iw = f"nll_iw{iw_n}" if iw_n else None
    card_metrics = {"neg_elbo_nats": metrics["neg_elbo"], "recon_bce_nats": metrics["recon_bce"],
                    "kl_nats": metrics["kl"], "recon_mse": metrics["recon_mse"],
                    **({f"{iw}_nats": metrics[iw]} if iw else {}),
                    "fd_1000_samples": metrics["fd"], "fd_1000_real_train_images": metrics["fd_real"],
                    "mean_confidence": metrics["mean_confidence"], "train_minutes": info["minutes"]}
    history = "\n".join(f"| {h['step']} | {h['minutes']:.1f} | {h['train_loss']:.2f} | {h['val_neg_elbo']:.2f} | "
                        f"{h['val_kl']:.2f} |" for h in info["history"])
    steps = info["steps_done"]
    extra = (
        f"All numbers on the 10,000 Fashion-MNIST test images, pixels scaled to [0, 1]. `neg_elbo_nats` is the "
        f"negative ELBO per image (recon + KL, with beta = 1 whatever beta trained the model; lower is better), "
        f"one posterior sample per image; the Bernoulli likelihood is applied to grey values (binary "
        f"cross-entropy), as usual for Fashion-MNIST VAEs, so it is a relative number, not a density of "
        f"continuous images. {f'`{iw}_nats` is the importance-weighted bound (Burda et al.) with {iw_n} samples. ' if iw else ''}"
        f"`recon_mse` is the per-pixel squared error of the decoder mean at the posterior mean.\n\n"
        f"Samples: decoder means of 1,000 draws z ~ N(0, I). `fd_1000_samples` is the Frechet distance between "
        f"their features and the 10,000 test images' in the evaluation classifier (`weights/evalnet-fashion`, "
        f"`training/gen_eval.py`); `fd_1000_real_train_images` is the same distance for 1,000 real training "
        f"images (the floor at this sample size). Classifier confidence histogram (top-class probability, "
        f"10 bins over [0, 1]): {metrics['confidence_histogram']}; predicted classes: "
        f"{metrics['predicted_class_counts']}.\n\n"
        f"Training: {steps} steps of batch {info['batch_size']} ({steps / info['steps_per_epoch']:.1f} "
        f"epochs of the 55,000 training images not held out for validation), AdamW lr {info['lr']}, cosine "
        f"schedule, beta {c.beta:g}; the checkpoint is the best of the per-epoch validation checks; "
        f"{info['minutes']:.1f} min of wall time{segments(info['history'])} on a shared CPU ({platform.processor() or platform.machine()}, "
        f"{info['threads']} torch thread(s), fp32), {info['n_params'] / 1e6:.2f}M parameters, stored as fp16.\n\n"
        f"| step | minutes (per run segment) | train loss | val -ELBO | val KL |\n|---|---|---|---|---|\n{history}\n")
    description = (f"Convolutional VAE (two stride-2 convs + a {c.hidden}-unit layer to a {c.latent_dim}-d Gaussian "
                   f"posterior; mirror-image transposed-conv decoder with Bernoulli pixel logits) trained with "
                   f"beta = {c.beta:g} on Fashion-MNIST." +
                   (" The KL weight above 1 trades reconstruction for a smoother, more factorized latent space "
                    "(beta-VAE, Higgins et al. 2017)." if c.beta > 1 else "") +
                   (" Its 2-d latent space is the tab's clickable latent map." if c.latent_dim == 2 else ""))
    weights.write_card(folder, folder.name, description=description, metrics=card_metrics,
                       dataset="fashion_mnist", dataset_name="Fashion-MNIST", task_type="unconditional-image-generation",
                       command=info["command"], extra=extra, tags=["vae", "image-generation", "fashion-mnist"])


# --------------------------------------------------------------------------- evaluate

def load_folder(folder: str | Path) -> VAE:
    return load_weights_folder(VAE, folder)


def evaluate_command(args: argparse.Namespace) -> None:
    model = load_folder(args.weights)
    if args.samples < 2:
        fail("--samples must be at least 2")
    info = load_run_info(args.update_card) if args.update_card else None
    metrics = evaluate_model(model, args.data, args.samples, info["iw_samples"] if info else args.iw_samples)
    print_json({"weights": str(args.weights), "beta": model.config.beta, "latent_dim": model.config.latent_dim,
                **metrics})
    if info:
        write_vae_card(Path(args.weights), model, metrics, info)


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beta", type=float, default=1.0, help="KL weight (1: the ELBO; >1: beta-VAE)")
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--data", default=None, help="folder with the Fashion-MNIST idx files (default: Debian's)")
    p.add_argument("--iw-samples", type=int, default=32, help="importance samples for the log-likelihood bound")
    p.add_argument("--limit", type=int, default=None, help="use only this many training images (smoke runs)")
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--eval-every", type=int, default=None, help="steps (default: one epoch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--name", default=None, help="weights name (default vae-fashion, or beta-vae-fashion if beta != 1)")
    p.add_argument("--out", default=None, help="checkpoint folder")
    p.add_argument("--weights-out", default=None, help="weights folder (default weights/<name>)")


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--iw-samples", type=int, default=32)
    p.add_argument("--update-card", metavar="CHECKPOINT_DIR", default=None,
                   help="rewrite the weights folder's model card with these measurements (run info from the folder)")


def main() -> None:
    args = cli(__doc__.splitlines()[0], add_train_args, add_eval_args)
    if args.command == "train" and (args.latent_dim < 1 or args.beta < 0 or args.steps < 1):
        fail("need --latent-dim >= 1, --beta >= 0 and --steps >= 1")
    if args.command == "evaluate":
        evaluate_command(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
