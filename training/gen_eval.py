"""The evaluation classifier for generated images, and the metrics built on it.

    python -m training.gen_eval --dataset fashion --threads 1          # writes weights/evalnet-fashion
    python -m training.gen_eval evaluate --weights weights/evalnet-fashion

Helpers the generative trainers use (all on float images in [-1, 1], (B, C, H, W)):
``load_evaluator``, ``class_consistency``, ``frechet_distance``, ``confidence_histogram``,
``real_features``.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import weights
from models.evalnet import EvalNet, EvalNetConfig
from training.common import CHECKPOINTS, cli, fail, load_weights_folder, print_json, push_to_hub
from training.loop import TrainConfig, fit, precision

DATASETS = ("fashion", "cifar10")
RECIPES = {  # sized for a few minutes on one CPU thread (pool=3 keeps more layout; not yet measured here)
    "fashion": dict(widths=[16, 32, 64], pool=1, epochs=5, batch_size=128, lr=3e-3, flip=True, bf16=False),
    "cifar10": dict(widths=[32, 64, 128], pool=2, epochs=10, batch_size=128, lr=3e-3, flip=True, bf16=True),
}


# --------------------------------------------------------------------------- data

def load_dataset(dataset: str, split: str, root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) and int64 labels of ``fashion`` (1x28x28) or ``cifar10`` (3x32x32)."""
    if dataset == "fashion":
        from training.fashion import load_fashion
        images, labels = load_fashion(split, root)
        return images.unsqueeze(1), labels
    if dataset == "cifar10":
        from training.classify import load_split
        return load_split(split, root)
    raise ValueError(f"unknown dataset {dataset!r}: use one of {DATASETS}")


def class_names(dataset: str) -> list[str]:
    if dataset == "fashion":
        from training.fashion import CLASSES
    else:
        from training.classify import CLASSES
    return list(CLASSES)


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] (the generative models' range)."""
    return images.float().div(127.5).sub(1)


class Shifted:
    """Indices in, augmented batches out: random translation by up to ``shift`` pixels (zero padding,
    the background of both datasets is near black) and, optionally, horizontal flips."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, shift: int = 2, flip: bool = True):
        self.images, self.labels, self.shift, self.flip = images, labels, shift, flip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        x, s = to_signed(self.images[idx]), self.shift
        if s:
            size = x.shape[-1]
            padded = F.pad(x, (s,) * 4, value=-1.0)
            offsets = torch.randint(0, 2 * s + 1, (len(idx), 2)).tolist()
            x = torch.stack([p[:, dy:dy + size, dx:dx + size] for p, (dy, dx) in zip(padded, offsets)])
        if self.flip:
            x = torch.where((torch.rand(len(idx)) < 0.5).view(-1, 1, 1, 1), x.flip(3), x)
        return x, self.labels[idx]


# --------------------------------------------------------------------------- metrics

def load_evaluator(dataset: str) -> EvalNet:
    """The released evaluation classifier of ``dataset`` (``weights/evalnet-<dataset>``), eval mode, CPU."""
    return weights.load(f"evalnet-{dataset}")


@torch.no_grad()
def _batched(fn, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([fn(chunk) for chunk in images.split(batch_size)])


@torch.no_grad()
def predict_logits(images: torch.Tensor, evaluator: nn.Module) -> torch.Tensor:
    evaluator.eval()
    return _batched(evaluator, images)


def class_consistency(images: torch.Tensor, labels: torch.Tensor, evaluator: nn.Module) -> float:
    """The share of ``images`` (float, [-1, 1]) that the evaluator assigns to the requested ``labels``."""
    if len(images) == 0:
        raise ValueError("no images")
    pred = predict_logits(images, evaluator).argmax(1)
    return float((pred == labels.to(pred.device)).float().mean())


def confidence_histogram(images: torch.Tensor, evaluator: nn.Module, bins: int = 10) -> list[int]:
    """Counts of the evaluator's top-class probability in ``bins`` equal bins over [0, 1]."""
    conf = predict_logits(images, evaluator).softmax(1).amax(1)
    return torch.histc(conf.double(), bins=bins, min=0.0, max=1.0).long().tolist()


@torch.no_grad()
def features(images: torch.Tensor, evaluator: EvalNet) -> torch.Tensor:
    evaluator.eval()
    return _batched(evaluator.features, images)


def real_features(dataset: str, n: int = 10000, root: str | Path | None = None, seed: int = 0) -> torch.Tensor:
    """Evaluator features of ``n`` real test images (a fixed random subset when n < the test set)."""
    images, _ = load_dataset(dataset, "test", root)
    if n < len(images):
        images = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]]
    return features(to_signed(images), load_evaluator(dataset))


def _psd_sqrt(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(real_feats: torch.Tensor, fake_feats: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (the FID formula):
    |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2).

    tr((S1 S2)^1/2) equals tr((S1^1/2 S2 S1^1/2)^1/2), whose argument is symmetric PSD, so two
    ``eigh`` calls replace scipy's general ``sqrtm``; computed in float64."""
    a, b = real_feats.double(), fake_feats.double()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need two (N>=2, D) feature sets of the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = torch.cov(a.T), torch.cov(b.T)
    root = _psd_sqrt(s1)
    cross = torch.linalg.eigvalsh(root @ s2 @ root).clamp(min=0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace() - 2 * cross)


# --------------------------------------------------------------------------- train

def test_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predict_logits(to_signed(images), model).argmax(1) == labels).float().mean())


def train(args: argparse.Namespace) -> None:
    recipe = dict(RECIPES[args.dataset])
    for key in ("epochs", "lr", "batch_size", "bf16"):
        if getattr(args, key) is not None:
            recipe[key] = getattr(args, key)
    try:
        images, labels = load_dataset(args.dataset, "train", args.data)
        test_images, test_labels = load_dataset(args.dataset, "test", args.data)
    except (OSError, ValueError) as e:
        fail(f"could not read {args.dataset}: {e}")
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    val_idx, train_idx = perm[:5000], perm[5000:]
    if args.limit:
        train_idx = train_idx[:args.limit]
    train_set = Shifted(images[train_idx], labels[train_idx], flip=recipe["flip"])
    val_images, val_labels = images[val_idx], labels[val_idx]

    torch.manual_seed(args.seed)
    config = EvalNetConfig(in_channels=images.shape[1], widths=recipe["widths"], pool=recipe["pool"], classes=class_names(args.dataset),
                           dataset=args.dataset)
    model = EvalNet(config)
    steps_per_epoch = len(train_set) // recipe["batch_size"]
    steps = max(1, round(recipe["epochs"] * steps_per_epoch))
    cfg = TrainConfig(steps=steps, batch_size=recipe["batch_size"], lr=recipe["lr"], weight_decay=5e-4,
                      schedule="onecycle", warmup_steps=round(0.15 * steps), bf16=recipe["bf16"],
                      eval_every=steps_per_epoch, monitor="val_acc", mode="max", max_minutes=args.max_minutes,
                      seed=args.seed, out_dir=str(args.checkpoints or CHECKPOINTS / f"evalnet-{args.dataset}"),
                      resume=not args.fresh)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

    def evaluate(m: nn.Module) -> dict[str, float]:
        acc = test_accuracy(m, val_images, val_labels)
        m.train()
        return {"val_acc": acc}

    n_params = sum(p.numel() for p in model.parameters())
    print(f"evalnet-{args.dataset}: {n_params / 1e3:.0f}k parameters, {len(train_set)} images, {steps} steps",
          flush=True)
    result = fit(model, train_set, lambda m, b: criterion(m(b[0]), b[1]), cfg, evaluate=evaluate,
                 collate_fn=train_set.collate)
    model.eval()
    acc = test_accuracy(model, test_images, test_labels)
    print(f"test accuracy {acc:.4f}", flush=True)
    folder = Path(args.weights_out) if args.weights_out else weights.local_dir(f"evalnet-{args.dataset}")
    weights.save(model, folder)
    extra = (f"Test accuracy on the {len(test_labels)} official test images; the checkpoint is the best of "
             f"{len(history_lines := result.history)} epochs on a 5,000-image validation split of the training "
             f"set. Training: {result.steps_done} steps of batch {recipe['batch_size']}, AdamW one-cycle lr "
             f"{recipe['lr']}, label smoothing 0.1, random 2-pixel shifts and flips; {result.minutes:.1f} min on "
             f"the CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
             f"{precision(recipe['bf16'])}), "
             f"{n_params / 1e3:.0f}k parameters.\n\nUsed only to judge generated images (class consistency, "
             f"confidence histogram, Frechet distance in its {config.feature_dim}-d penultimate features); never "
             f"part of a generative model.\n\n| epoch | minutes | val accuracy |\n|---|---|---|\n"
             + "\n".join(f"| {i + 1} | {h['minutes']:.1f} | {h['val_acc']:.4f} |" for i, h in enumerate(history_lines)))
    weights.write_card(folder, f"evalnet-{args.dataset}", description=(
        f"Small CNN (conv widths {config.widths}, BatchNorm, average pool to {config.pool}x{config.pool}, "
        f"{config.feature_dim}-d feature "
        f"layer) trained from scratch as the evaluation classifier for generated {args.dataset} images."),
        metrics={"accuracy": round(acc, 4), "val_accuracy": round(result.best_metric, 4),
                 "train_minutes": round(result.minutes, 2)},
        dataset="fashion_mnist" if args.dataset == "fashion" else "cifar10",
        dataset_name="Fashion-MNIST" if args.dataset == "fashion" else "CIFAR-10",
        task_type="image-classification", command="python -m training.gen_eval " + " ".join(sys.argv[1:]),
        extra=extra, tags=["image-classification", "evaluation"])
    print(f"wrote {folder}", flush=True)
    if args.push_to_hub:
        print(push_to_hub(folder, args.push_to_hub))


def evaluate_command(args: argparse.Namespace) -> None:
    folder = Path(args.weights)
    model = load_weights_folder(EvalNet, folder)
    dataset = model.config.dataset
    try:
        images, labels = load_dataset(dataset, "test", args.data)
    except (OSError, ValueError) as e:
        fail(f"could not read {dataset}: {e}")
    print_json({"weights": str(folder), "dataset": dataset, "n": len(labels),
                "accuracy": round(test_accuracy(model, images, labels), 4)})


def main() -> None:
    def train_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", choices=DATASETS, default="fashion")
        p.add_argument("--data", default=None, help="dataset folder (default: the standard location)")
        p.add_argument("--epochs", type=float, default=None)
        p.add_argument("--lr", type=float, default=None)
        p.add_argument("--batch-size", type=int, default=None)
        p.add_argument("--limit", type=int, default=None, help="use only this many training images (smoke tests)")
        p.add_argument("--max-minutes", type=float, default=None)
        p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                       help="bf16 autocast (default: the recipe's; a no-op where the device would run it slower)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
        p.add_argument("--checkpoints", default=None, help="checkpoint folder (default checkpoints/evalnet-DATASET)")
        p.add_argument("--weights-out", default=None,
                       help="weights folder (default weights/evalnet-DATASET, which judges the generative models)")

    def eval_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--weights", required=True)
        p.add_argument("--data", default=None)

    args = cli(__doc__.splitlines()[0], train_args, eval_args)
    if args.command == "evaluate":
        evaluate_command(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
