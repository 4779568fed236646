"""Train, evaluate and export the CIFAR-10 classifiers (compact net, ResNet, ViT).

    python -m training.classify --model compact        # ~22 min on 2 CPU threads (bf16); shipped: --epochs 15.5 --val-size 0 --flip alternate
    python -m training.classify evaluate --weights weights/compact-cifar10 --data ../shared/datasets/cifar10-jpg/test
    python -m training.classify evaluate --weights weights/compact-cifar10 --data data_cache/voc-photos/photos --tta 2  # photos: training.photos
    python -m training.classify evaluate --weights weights/compact-cifar10 --data DIR --tta 2 --frame weights/yolo-voc  # as the tab
    python -m training.classify export --weights weights/compact-cifar10 --format onnx   # or pt2, torchscript
    python -m training.classify average --weights weights/vit-cifar10 checkpoints/classify-vit/best.pt --out soup
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import platform
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from models.classify import (TTA_LEVELS, CompactNet, CompactNetConfig, ResNet, ResNetConfig, ViT, ViTConfig,
                             tta_logits)
import weights
from training.common import (CHECKPOINTS, ROOT, check_weights_folder, cli, default_data, fail, from_pretrained,
                             print_json, push_to_hub)
from training.loop import TrainConfig, checkpoint_path, fit, load_checkpoint, pick_device, precision

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CACHE = ROOT / "data_cache"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# --------------------------------------------------------------------------- data

def fit_input(image: Image.Image, size: int = 32) -> Image.Image:
    """A photo of any size -> the ``size`` x ``size`` image the classifiers see (the Classification tab's and
    ``evaluate --data``'s view): the longer side is center-cropped halfway to a square (a 16:9 photo keeps a
    1.39:1 window), then the window is shrunk with bicubic anti-aliasing, squashing the aspect ratio that is left.

    Chosen on real photos (``training.photos``: VOC objects and single-subject photos, odd image ids; the card of
    each classifier has the figures): a square center crop cuts off the ends of wide subjects (airplanes, ships,
    cars), squashing the whole photo distorts them, and padding to a square shrinks them.
    """
    w, h = image.size
    side = min(w, h)
    cw, ch = (w + side) // 2, (h + side) // 2
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.resize((size, size), Image.BICUBIC, box=(left, top, left + cw, top + ch))


# Framing: the detector's most confident box of an animal or a vehicle (CIFAR-10's ten classes are six animals and
# four vehicles; VOC's people and furniture are never a CIFAR-10 subject) at its default score threshold, with a
# quarter of the box's width and height kept as context on each side. Chosen on VOC2007 val photos, which the
# detector (weights/yolo-voc) never trained on; the classifiers' cards have the figures
FRAME_CLASSES = {"aeroplane", "bicycle", "bird", "boat", "bus", "car", "cat", "cow", "dog", "horse", "motorbike",
                 "sheep", "train"}
FRAME_SCORE, FRAME_MARGIN = 0.25, 0.25


def frame_subject(image: Image.Image, detector: nn.Module) -> tuple[Image.Image, tuple[str, float] | None]:
    """An RGB photo cut down to the animal or vehicle (``FRAME_CLASSES``) ``detector`` (a ``models.detect.YOLO``)
    is surest of, plus ``FRAME_MARGIN`` of context, and (that subject's detector class, score); the whole photo and
    None when it finds none (the detector sees the photo as the Detection tab does, ``detect_photo``)."""
    from models.detect import detect_photo
    found = detect_photo(detector, image, FRAME_SCORE)
    subjects = [d for d in found if d[0] in FRAME_CLASSES]
    if not subjects:
        return image, None
    cls, score, (x0, y0, x1, y1) = max(subjects, key=lambda d: d[1])
    dx, dy = FRAME_MARGIN * (x1 - x0), FRAME_MARGIN * (y1 - y0)
    box = (round(max(0, x0 - dx)), round(max(0, y0 - dy)), round(min(image.width, x1 + dx)),
           round(min(image.height, y1 + dy)))
    if box[2] <= box[0] or box[3] <= box[1]:
        return image, None
    return image.crop(box), (cls, score)


def read_folder(folder: str | Path, size: int = 32, frame: nn.Module | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """An ImageFolder tree with CIFAR-10 class subfolders -> (N,3,size,size) uint8 images, (N,) labels.

    Any image size or mode is accepted (converted to RGB, ``frame_subject`` with the detector ``frame`` if one is
    given, then ``fit_input``); subfolders that are not CIFAR-10 classes are an error, missing classes are allowed.
    """
    from torchvision.datasets import ImageFolder
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    data = ImageFolder(str(folder), is_valid_file=lambda p: p.lower().endswith(IMAGE_EXTS),
                       allow_empty=True)
    unknown = [c for c in data.classes if c not in CLASSES]
    if unknown:
        raise ValueError(f"{folder}: subfolders {unknown} are not CIFAR-10 classes {list(CLASSES)}")
    images = np.empty((len(data.samples), size, size, 3), dtype=np.uint8)
    labels = torch.empty(len(data.samples), dtype=torch.long)
    for i, (path, target) in enumerate(data.samples):
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            images[i] = np.asarray(fit_input(frame_subject(rgb, frame)[0] if frame is not None else rgb, size))
        labels[i] = CLASSES.index(data.classes[target])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels


def load_split(split: str, root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 ``train``/``test`` as uint8 tensors, decoded once and cached under ``data_cache/``.

    ``root`` is the JPEG ImageFolder copy (default ``../shared/datasets/cifar10-jpg``); without it,
    torchvision's ``CIFAR10(download=True)`` fetches the official images into ``data_cache/``.
    """
    root = Path(root) if root is not None else default_data("cifar10-jpg")
    if not (root / split).is_dir():
        from torchvision.datasets import CIFAR10
        ds = CIFAR10(str(CACHE / "cifar10"), train=split == "train", download=True)
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)
    key = hashlib.sha1(str((root / split).resolve()).encode()).hexdigest()[:8]
    cache = CACHE / f"cifar10-{split}-{key}.pt"
    if cache.exists():
        blob = torch.load(cache, weights_only=True)
        return blob["images"], blob["labels"]
    images, labels = read_folder(root / split)
    CACHE.mkdir(exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save({"images": images, "labels": labels}, tmp)
    tmp.replace(cache)
    return images, labels


class Augmented:
    """A training set served batch-wise from a uint8 tensor: the dataset yields indices and
    ``collate`` gathers them, flips and translates each image by up to ``translate`` pixels
    (reflect padding), all as whole-batch tensor ops. Returns (uint8 images, labels).

    ``flip``: "random" mirrors each served image with probability 1/2; "alternate" (airbench) mirrors a
    random half the first time and then alternates per image, so every image is seen both ways in every
    two epochs (the alternation restarts from the initial half after a resume); "none" never flips.

    ``augment``: a torchvision policy applied to each image after the crop and flip (ViT-CIFAR's
    recipe uses AutoAugment's CIFAR-10 policy); about 0.2 ms an image on one CPU thread."""

    FLIPS = ("random", "alternate", "none")
    POLICIES = {"none": lambda: None,
                "autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
                "randaugment": lambda: v2.RandAugment(num_ops=2, magnitude=9),
                "trivialaugment": lambda: v2.TrivialAugmentWide()}

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, translate: int = 2, flip: str = "random",
                 augment: str = "none"):
        if flip not in self.FLIPS:
            raise ValueError(f"flip must be one of {self.FLIPS}, got {flip!r}")
        if augment not in self.POLICIES:
            raise ValueError(f"augment must be one of {tuple(self.POLICIES)}, got {augment!r}")
        self.labels, self.translate, self.flip = labels, translate, flip
        self.policy = self.POLICIES[augment]()
        self.images = _pad_reflect(images, translate) if translate else images
        # "alternate" only: whether each image is mirrored the next time it is served
        self.flipped_next = torch.rand(len(labels)) < 0.5 if flip == "alternate" else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        x, t = self.images[idx], self.translate
        if t:
            n, size = len(idx), x.shape[-1] - 2 * t
            shifts = torch.randint(0, 2 * t + 1, (n, 2))
            out = torch.empty(n, 3, size, size, dtype=x.dtype)
            for dy in range(2 * t + 1):  # one slice per offset instead of one per image
                for dx in range(2 * t + 1):
                    sel = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero().flatten()
                    if len(sel):
                        out[sel] = x[sel, :, dy:dy + size, dx:dx + size]
            x = out
        if self.flip != "none":
            if self.flip == "alternate":
                mask = self.flipped_next[idx]
                self.flipped_next[idx] = ~mask
            else:
                mask = torch.rand(len(idx)) < 0.5
            x = torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)
        if self.policy:  # per image: on a batch the policy would draw one operation for all of them
            x = torch.stack([self.policy(image) for image in x])
        return x, self.labels[idx]


# Whole-batch mixing on float images (each image blended with / pasted into its neighbour in the batch); labels
# become class probabilities in the same proportions. DeiT and ViT-CIFAR train their ViTs with these.
BATCH_MIXES = {"none": lambda classes: None,
               "cutmix": lambda classes: v2.CutMix(num_classes=classes),
               "mixup": lambda classes: v2.MixUp(num_classes=classes),
               "cutmix-or-mixup": lambda classes: v2.RandomChoice([v2.CutMix(num_classes=classes),
                                                                   v2.MixUp(num_classes=classes)])}


def validation_split(n: int, val_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation, training) indices of the ``n`` training images: one fixed permutation (seed 0), so training
    and ``average`` hold out the same images."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return perm[:val_size], perm[val_size:]


def _pad_reflect(images: torch.Tensor, pad: int, chunk: int = 5000) -> torch.Tensor:
    return torch.cat([F.pad(c.float(), (pad,) * 4, mode="reflect").to(images.dtype)
                      for c in images.split(chunk)])


def to_input(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B,3,H,W) -> float [0,1], channels-last (the fast layout for CPU convolutions)."""
    x = images.to(device, non_blocking=True).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, tta: int = 0, batch_size: int = 500) -> torch.Tensor:
    """Logits for uint8 images, averaged over the test-time views of level ``tta`` (see ``tta_logits``)."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([tta_logits(model, to_input(chunk, device), tta).cpu() for chunk in images.split(batch_size)])


def distilled_from(teachers: list[str], kind: str = "hard") -> str:
    """The model card's sentence on distillation (empty without teachers)."""
    if not teachers:
        return ""
    names = " + ".join(f"`{t}`" for t in teachers)
    one = len(teachers) == 1
    if kind == "hard":
        whose = "its" if one else "their mean probabilities'"
        how = f"half the loss on {whose} top class, DeiT hard distillation"
    else:
        how = (f"half the loss is the cross-entropy to {'its' if one else 'their mean'} probabilities on the same "
               "augmented image, soft distillation")
    return f"Distilled from {names} ({how}). "


def accuracy_report(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    pred = logits.argmax(1)
    per_class = {c: round(float((pred[labels == i] == i).float().mean()), 4)
                 for i, c in enumerate(classes) if (labels == i).any()}
    return {"accuracy": round(float((pred == labels).float().mean()), 4), "n": len(labels),
            "per_class_accuracy": per_class}


# --------------------------------------------------------------------------- recipes

@dataclass
class Recipe:
    """What differs between the three models' training; the loop does the rest."""
    epochs: float
    batch_size: int
    optimizer: str                 # sgd | adamw
    lr: float
    weight_decay: float
    label_smoothing: float
    warmup: float = 0.0            # fraction of the steps
    translate: int = 4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None
    bias_lr_scale: float = 1.0     # compact net: BN shifts learn this much faster (airbench's bias_scaler)
    tta: int = 1                   # test-time augmentation level for the reported number (models.classify.
                                   # tta_logits; each recipe's is the best on the validation split)
    widths: tuple[int, ...] | None = None  # compact net block widths (None: the model's default)
    lookahead: bool = False        # compact net: airbench's Lookahead on the weights
    flip: str = "random"           # random | alternate (airbench: each image mirrored every other epoch) | none
    augment: str = "none"          # none | autoaugment | randaugment | trivialaugment (see Augmented)
    mix: str = "none"              # none | cutmix | mixup | cutmix-or-mixup (see BATCH_MIXES)
    bf16: bool = False             # bf16 autocast (where the device runs it fast: CUDA, CPUs with AVX-512 bf16)


RECIPES: dict[str, Recipe] = {
    # airbench94's network and hyper-parameters (per-example lr / weight decay rescaled to the batch size);
    # 15 epochs in bf16 take ~22 minutes on 2 CPU threads with AVX-512 bf16
    "compact": Recipe(epochs=15, batch_size=512, optimizer="sgd", lr=11.5, weight_decay=0.0153,
                      label_smoothing=0.2, warmup=0.2, translate=2, betas=(0.85, 0.999),
                      bias_lr_scale=64.0, tta=2, widths=(64, 256, 256), lookahead=True, bf16=True),
    # the standard ResNet recipe (kuangliu/pytorch-cifar: SGD 0.1, wd 5e-4, cosine, 200 epochs)
    "resnet18": Recipe(epochs=200, batch_size=128, optimizer="sgd", lr=0.1, weight_decay=5e-4,
                       label_smoothing=0.1, warmup=0.01, translate=4, betas=(0.9, 0.999), tta=2),
    # ViT from scratch (omihub777/ViT-CIFAR: AdamW 1e-3, wd 5e-5, warm-up 5 epochs, 200 epochs, smoothing 0.1)
    "vit": Recipe(epochs=200, batch_size=128, optimizer="adamw", lr=1e-3, weight_decay=5e-5,
                  label_smoothing=0.1, warmup=0.025, translate=4, grad_clip=1.0, tta=3),
}
WEIGHT_NAMES = {"compact": "compact-cifar10", "resnet18": "resnet18-cifar10", "resnet34": "resnet34-cifar10",
                "vit": "vit-cifar10"}


MODEL_CLASSES = {"compact": CompactNet, "resnet18": ResNet, "resnet34": ResNet, "vit": ViT}
CONFIG_CLASSES = {CompactNet: CompactNetConfig, ResNet: ResNetConfig, ViT: ViTConfig}


def build_model(kind: str, overrides: dict[str, Any] | None = None) -> nn.Module:
    """The model ``kind`` with its config's defaults, changed by ``overrides`` (e.g. ``{"dim": 192}``)."""
    if kind not in MODEL_CLASSES:
        raise ValueError(f"unknown model {kind!r}")
    config = {"depth": int(kind[-2:]), **(overrides or {})} if kind.startswith("resnet") else overrides or {}
    model_class = MODEL_CLASSES[kind]
    try:  # the dataclass, not a dict: the saved config.json then holds every field, defaults included
        return model_class(CONFIG_CLASSES[model_class](**config))
    except TypeError as e:  # an unknown field
        raise ValueError(f"--model-config for {kind}: {e}") from None


def parse_model_config(pairs: list[str]) -> dict[str, Any]:
    """``["dim=192", "widths=[64,256,256]"]`` -> ``{"dim": 192, "widths": [64, 256, 256]}``."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-config expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """Weight decay on weights only; for SGD the airbench parametrization: ``lr`` and ``weight_decay``
    are per example and independent of the momentum, so they carry over between batch sizes."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # no weight decay on 1-d parameters; with airbench's faster rate, only the BatchNorm shifts get it
    is_bias = (lambda n, p: "norm" in n) if recipe.bias_lr_scale != 1.0 else (lambda n, p: p.ndim < 2)
    decay = [p for n, p in params if not is_bias(n, p)]
    biases = [p for n, p in params if is_bias(n, p)]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                  {"params": biases, "weight_decay": 0.0}], lr=recipe.lr, betas=recipe.betas)
    momentum = recipe.betas[0]
    if recipe.bias_lr_scale == 1.0:  # plain SGD: lr and wd as written
        lr, wd = recipe.lr, recipe.weight_decay
        groups = [{"params": decay, "lr": lr, "weight_decay": wd}, {"params": biases, "lr": lr, "weight_decay": 0.0}]
    else:  # airbench: loss summed over the batch <=> mean loss with lr * batch_size
        scale = 1024 * (1 + 1 / (1 - momentum))
        lr = recipe.lr / scale * recipe.batch_size
        wd = recipe.weight_decay * recipe.batch_size / scale
        bias_lr = lr * recipe.bias_lr_scale
        groups = [{"params": decay, "lr": lr, "weight_decay": wd / lr},
                  {"params": biases, "lr": bias_lr, "weight_decay": wd / bias_lr}]
    return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=momentum, nesterov=True)


class Lookahead:
    """airbench's Lookahead (Zhang et al., 2019): every ``every`` steps the weights are pulled toward a
    slow copy by a factor that grows as (step / total)^3, and the slow copy becomes the final weights (of a
    run that reaches ``total``; one stopped early by its time budget keeps its fast weights).

    ``resumed``: the slow copy is not in the loop's checkpoint, so a resumed run takes it from the weights
    it resumes with, at its first step (not from the freshly initialised ones, which are gone)."""

    def __init__(self, model: nn.Module, total_steps: int, every: int = 5, base: float = 0.95 ** 5,
                 resumed: bool = False):
        self.model, self.total, self.every, self.base = model, total_steps, every, base
        self.slow = None if resumed else self._copy()

    def _copy(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def __call__(self, step: int) -> None:
        if self.slow is None:
            self.slow = self._copy()
        if step % self.every and step < self.total:
            return
        decay = 1.0 if step >= self.total else self.base * (step / self.total) ** 3
        for k, v in self.model.state_dict().items():
            if k in self.slow:
                self.slow[k].lerp_(v, 1 - decay)
                v.copy_(self.slow[k])


# --------------------------------------------------------------------------- train

def train(args: argparse.Namespace) -> None:
    recipe = RECIPES["resnet18" if args.model == "resnet34" else args.model]
    for key in ("epochs", "batch_size", "lr", "weight_decay", "label_smoothing", "tta", "lookahead", "bf16", "flip",
                "augment", "mix"):
        if getattr(args, key, None) is not None:
            recipe = replace(recipe, **{key: getattr(args, key)})
    if args.bf16 is None and torch.cuda.is_available():
        recipe = replace(recipe, bf16=True)
    try:
        images, labels = load_split("train", args.data)
        test_images, test_labels = load_split("test", args.data)
    except (OSError, ValueError) as e:
        fail(f"could not read CIFAR-10 from {args.data}: {e}")
    # 45k / 5k split for selection; the 10k test set is only used once, for the reported number.
    # --val-size 0 trains on all 50k and keeps the last weights (airbench's protocol)
    if not 0 <= args.val_size < len(labels):
        fail(f"--val-size must be between 0 and {len(labels) - 1}, got {args.val_size}")
    val_idx, train_idx = validation_split(len(labels), args.val_size)
    if args.limit:
        train_idx = train_idx[:args.limit]
    train_set = Augmented(images[train_idx], labels[train_idx], translate=recipe.translate, flip=recipe.flip,
                          augment=recipe.augment)
    val_images, val_labels = images[val_idx], labels[val_idx]

    torch.manual_seed(args.seed)
    if args.init:  # a second schedule from released weights: their config, not --model-config / --widths
        if args.model_config or args.widths:
            fail("--init takes the architecture from the folder's config.json: drop --model-config / --widths")
        model = load_folder(args.init)
        if type(model) is not MODEL_CLASSES[args.model]:
            fail(f"--init {args.init} holds a {type(model).__name__}, not a --model {args.model}")
    else:
        overrides = {"widths": list(args.widths or recipe.widths)} if args.widths or recipe.widths else {}
        try:
            overrides.update(parse_model_config(args.model_config))
            model = build_model(args.model, overrides)
        except ValueError as e:
            fail(str(e))
        if isinstance(model, CompactNet):
            model.init_whitening(images[train_idx[:5000]].float() / 255)
    model = model.to(memory_format=torch.channels_last)
    steps_per_epoch = len(train_set) // recipe.batch_size
    steps = max(1, round(recipe.epochs * steps_per_epoch))
    out_dir = Path(args.out) if args.out else CHECKPOINTS / f"classify-{args.model}"
    cfg = TrainConfig(steps=steps, batch_size=recipe.batch_size, lr=recipe.lr, weight_decay=recipe.weight_decay,
                      optimizer=recipe.optimizer, schedule="cosine", warmup_steps=round(recipe.warmup * steps),
                      grad_clip=recipe.grad_clip, bf16=recipe.bf16, eval_every=args.eval_every or steps_per_epoch,
                      # without a validation split, "best" is the latest step: the last weights are kept
                      monitor="val_acc" if args.val_size else "step", mode="max", max_minutes=args.max_minutes,
                      seed=args.seed, out_dir=str(out_dir), resume=not args.fresh, compile=args.compile)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    mix = BATCH_MIXES[recipe.mix](len(model.classes))
    teachers = [load_folder(t).eval().requires_grad_(False).to(pick_device(), memory_format=torch.channels_last)
                for t in args.teacher]
    for path, teacher in zip(args.teacher, teachers):
        if teacher.classes != model.classes:
            fail(f"--teacher {path} predicts {teacher.classes}, not this model's classes")
    whiten_bias_steps = round(3 * steps_per_epoch)  # airbench trains the whitening bias for 3 epochs only

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        x = to_input(x, x.device)
        if mix:  # the blend may come back in the default layout
            x, y = mix(x, y)
            x = x.contiguous(memory_format=torch.channels_last)
        logits = m(x)
        if not teachers:
            return criterion(logits, y)
        # Half the loss on the labels, half on the teachers' view of the same (augmented) image; several teachers
        # vote with their mean probabilities (an ensemble is a better teacher than any one of its members).
        # hard (DeiT): their top class, which passes a conv net's inductive bias on to the ViT. soft (Hinton;
        # Beyer et al.'s "patient and consistent" function matching with a mix): the probabilities themselves,
        # which still teach where the teachers agree with the label, as they do on nearly every training image
        with torch.no_grad():
            teacher_probs = sum(t(x).float().softmax(1) for t in teachers) / len(teachers)
        target = teacher_probs.argmax(1) if args.distillation == "hard" else teacher_probs
        return 0.5 * criterion(logits, y) + 0.5 * F.cross_entropy(logits, target)

    resuming = cfg.resume and checkpoint_path(out_dir).exists()
    lookahead = Lookahead(model, steps, resumed=resuming) if recipe.lookahead else None

    def on_step(step: int, _loss: float) -> None:
        if isinstance(model, CompactNet) and step >= whiten_bias_steps:
            model.whiten.bias.requires_grad_(False)
        if lookahead:
            lookahead(step)

    def evaluate(m: nn.Module) -> dict[str, float]:
        logits = predict(m, val_images)
        m.train()
        return {"val_loss": float(F.cross_entropy(logits, val_labels)),
                "val_acc": float((logits.argmax(1) == val_labels).float().mean())}

    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {n_params / 1e6:.2f}M parameters, {len(train_set)} training images, {steps} steps "
          f"of {recipe.batch_size} ({recipe.epochs} epochs), {torch.get_num_threads()} threads", flush=True)
    result = fit(model, train_set, loss_fn, cfg, evaluate=evaluate if args.val_size else None,
                 collate_fn=train_set.collate, optimizer=make_optimizer(model, recipe), on_step=on_step)
    model.eval()
    report = accuracy_report(predict(model, test_images, tta=recipe.tta), test_labels, model.classes)
    plain = accuracy_report(predict(model, test_images, tta=0), test_labels, model.classes)["accuracy"]
    print(f"test accuracy {report['accuracy']:.4f} (tta={recipe.tta}), {plain:.4f} without; "
          f"trained {result.steps_done}/{steps} steps in {result.minutes:.1f} min", flush=True)

    folder = Path(args.weights_out) if args.weights_out else weights.local_dir(WEIGHT_NAMES[args.model])
    weights.save(model, folder)
    command = "python -m training.classify " + " ".join(sys.argv[1:])
    metrics = {"accuracy": report["accuracy"], "accuracy_no_tta": plain,
               **({"val_accuracy": result.best_metric} if args.val_size else {}),
               "train_minutes": round(result.minutes, 2)}
    selection = (f"the checkpoint is the best on a held-out {args.val_size:,}-image validation split of the training "
                 f"set (step {result.best_step} of {steps})" if args.val_size else
                 "trained on all training images, the last weights are kept (no validation split)")
    policy = "".join(f" + {name}" for name in (recipe.augment, recipe.mix) if name != "none")
    per_class = "\n".join(f"| {c} | {a:.4f} |" for c, a in report["per_class_accuracy"].items())
    history = "\n".join(f"| {h['step']} | {h['minutes']:.1f} | {h['train_loss']:.4f} | "
                        f"{format(h['val_acc'], '.4f') if 'val_acc' in h else '-'} |" for h in result.history)
    extra = (f"Test accuracy on the official 10,000 CIFAR-10 test images (the JPEG copy in "
             f"`cifar10-jpg/test`), with test-time augmentation level {recipe.tta} "
             f"({TTA_LEVELS[recipe.tta]}); "
             f"{selection}.\n\n"
             f"{f'Started from the weights in `{args.init}` (their card: how they were trained). ' if args.init else ''}"
             f"{distilled_from(args.teacher, args.distillation)}"
             f"Training: {result.steps_done} of {steps} steps of batch {recipe.batch_size} "
             f"({result.steps_done / steps_per_epoch:.2f} epochs of {len(train_set)} images), {recipe.optimizer} "
             f"lr {recipe.lr} wd {recipe.weight_decay}, label smoothing {recipe.label_smoothing}, {recipe.flip} flip + "
             f"{recipe.translate}-pixel translate{policy}; {result.minutes:.1f} min of wall time on the CPU "
             f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
             f"{precision(recipe.bf16)}, channels-last{', torch.compile' if args.compile else ''}), "
             f"{n_params / 1e6:.2f}M parameters.\n\n"
             f"| class | test accuracy |\n|---|---|\n{per_class}\n\n"
             f"| step | minutes | train loss | val accuracy |\n|---|---|---|---|\n{history}\n")
    description = DESCRIPTIONS[args.model].format(**vars(model.config))
    weights.write_card(folder, WEIGHT_NAMES[args.model], description=description, metrics=metrics,
                       dataset="cifar10", dataset_name="CIFAR-10", task_type="image-classification",
                       command=command, extra=extra, tags=["image-classification", "cifar10"])
    print(f"wrote {folder}", flush=True)
    if args.push_to_hub:
        print(push_to_hub(folder, args.push_to_hub))


DESCRIPTIONS = {
    "compact": "airbench94-style compact conv net (patch-whitening conv, three conv blocks of widths "
               "{widths}, BatchNorm, GELU) trained from scratch on CIFAR-10 on a CPU.",
    "resnet18": "ResNet-18 for 32x32 inputs (basic blocks, BatchNorm, He init, first-stage width {width}) "
                "trained from scratch on CIFAR-10.",
    "resnet34": "ResNet-34 for 32x32 inputs (basic blocks, BatchNorm, He init, first-stage width {width}) "
                "trained from scratch on CIFAR-10.",
    "vit": "Vision Transformer ({patch_size}x{patch_size} patches, class token, learned positions, {depth} pre-norm "
           "blocks of width {dim}, {heads} heads, MLP ratio {mlp_ratio}) trained from scratch on CIFAR-10.",
}


# --------------------------------------------------------------------------- evaluate / export

def load_folder(folder: str | Path) -> nn.Module:
    """A weights folder of any of the three classifiers; the class is read off its config.json."""
    folder = check_weights_folder(folder)
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except ValueError as e:
        fail(f"{path} is not valid JSON: {e}")
    cls = CompactNet if "widths" in config else ViT if "patch_size" in config else ResNet
    try:
        return from_pretrained(cls, folder)
    except Exception as e:
        fail(f"could not load {folder}: {type(e).__name__}: {e}")


def evaluate_command(args: argparse.Namespace) -> None:
    model = load_folder(args.weights)
    detector = None
    if args.frame:
        from models.detect import YOLO
        frame = Path(args.frame)
        if not frame.exists() and (frame.is_absolute() or frame.parent.is_dir()):  # a local path, mistyped
            fail(f"--frame {args.frame} not found (a detector's weights folder such as weights/yolo-voc, or a "
                 f"Hub repo id)")
        try:
            detector = YOLO.from_pretrained(str(args.frame), strict=True).eval()
        except Exception as e:  # a missing folder, another model's weights, corrupt files
            fail(f"--frame {args.frame} is not a detector's weights folder such as weights/yolo-voc "
                 f"({type(e).__name__}: {str(e)[:200]})")
    try:
        images, labels = read_folder(args.data, frame=detector)
    except (OSError, ValueError) as e:
        fail(str(e))
    if len(labels) == 0:
        fail(f"{args.data} holds no images in CIFAR-10 class subfolders")
    report = accuracy_report(predict(model.to(memory_format=torch.channels_last), images, tta=args.tta),
                             labels, model.classes)
    print_json({"weights": str(args.weights), "data": str(args.data), "tta": args.tta,
                **({"frame": str(args.frame)} if args.frame else {}), **report})


def load_member(source: str | Path, template: nn.Module) -> dict[str, torch.Tensor]:
    """The fp32 state dict of a weights folder or of a training checkpoint file (``best.pt``, ``checkpoint.pt``)
    of the same architecture as ``template``."""
    source = Path(source)
    if source.is_file():
        try:
            state = load_checkpoint(source)["model"]
        except Exception as e:
            fail(f"could not read a training checkpoint from {source}: {type(e).__name__}: {e}")
        state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}  # saved from a torch.compile'd model
    else:
        model = load_folder(source)
        if model.config != template.config:
            fail(f"{source} has config {model.config}, not {template.config}: only one architecture can be averaged")
        state = model.state_dict()
    expected = template.state_dict()
    if state.keys() != expected.keys() or any(state[k].shape != v.shape for k, v in expected.items()):
        fail(f"{source} does not hold a {type(template).__name__} with the first folder's config")
    return {k: v.float() for k, v in state.items()}


def average_command(args: argparse.Namespace) -> None:
    """A uniform weight soup (Wortsman et al. 2022, "Model soups"): the mean of the weights of several runs that
    started from the same weights. ``--greedy`` adds the members in order of validation accuracy and keeps each
    only if the soup's validation accuracy does not drop; the test set is scored once, for the chosen soup."""
    template = load_folder(args.weights[0]).eval()
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in template.modules()):
        fail(f"{args.weights[0]} is a BatchNorm net: its averaged running statistics would not match the averaged "
             "weights; weight averaging is for the ViT (LayerNorm)")
    members = {str(w): load_member(w, template) for w in args.weights}
    if len(members) < 2:
        fail("--weights needs two or more distinct folders or checkpoint files")
    try:
        images, labels = load_split("train", args.data)
        test_images, test_labels = load_split("test", args.data)
    except (OSError, ValueError) as e:
        fail(f"could not read CIFAR-10 from {args.data}: {e}")
    if not 0 < args.val_size < len(labels):
        fail(f"--val-size must be between 1 and {len(labels) - 1}, got {args.val_size}")
    val_idx, _ = validation_split(len(labels), args.val_size)  # the images the members never trained on
    val_images, val_labels = images[val_idx], labels[val_idx]

    def soup_of(names: list[str]) -> nn.Module:
        template.load_state_dict({k: sum(members[n][k] for n in names) / len(names) for k in members[names[0]]})
        return template

    def val_accuracy(model: nn.Module) -> float:
        return (predict(model, val_images, tta=args.tta).argmax(1) == val_labels).float().mean().item()

    scores = {name: val_accuracy(soup_of([name])) for name in members}
    if args.greedy:
        order = sorted(members, key=scores.get, reverse=True)
        chosen, val = order[:1], scores[order[0]]
        for name in order[1:]:
            score = val_accuracy(soup_of(chosen + [name]))
            print(f"soup of {len(chosen) + 1}: val {score:.4f} with {name} ({'kept' if score >= val else 'dropped'})",
                  flush=True)
            if score >= val:
                chosen, val = chosen + [name], score
    else:
        chosen = list(members)
        val = val_accuracy(soup_of(chosen))
    model = soup_of(chosen)
    report = accuracy_report(predict(model, test_images, tta=args.tta), test_labels, model.classes)
    plain = (predict(model, test_images).argmax(1) == test_labels).float().mean().item()
    out = Path(args.out)
    weights.save(model, out)
    rows = "\n".join(f"| `{n}` | {scores[n]:.4f} | {'yes' if n in chosen else 'no'} |" for n in members)
    per_class = "\n".join(f"| {c} | {a:.4f} |" for c, a in report["per_class_accuracy"].items())
    extra = (f"A weight soup: the uniform mean of {len(chosen)} of these {len(members)} sets of weights"
             f"{', chosen greedily on validation accuracy' if args.greedy else ''} (validation: the held-out "
             f"{args.val_size:,} training images the runs never trained on; test-time augmentation level {args.tta}; "
             f"the soup scores {val:.4f} there).\n\n| member | val accuracy | in the soup |\n|---|---|---|\n{rows}\n\n"
             f"Test accuracy on the official 10,000 CIFAR-10 test images, measured once, for the soup.\n\n"
             f"| class | test accuracy |\n|---|---|\n{per_class}\n")
    metrics = {"accuracy": report["accuracy"], "accuracy_no_tta": plain, "val_accuracy": val}
    weights.write_card(out, WEIGHT_NAMES["vit"], description=DESCRIPTIONS["vit"].format(**vars(model.config)),
                       metrics=metrics, dataset="cifar10", dataset_name="CIFAR-10", task_type="image-classification",
                       command="python -m training.classify " + " ".join(sys.argv[1:]), extra=extra,
                       tags=["image-classification", "cifar10"])
    print_json({"weights": str(out), "members": scores, "chosen": chosen, "val_accuracy": val, "tta": args.tta,
                "accuracy": report["accuracy"], "accuracy_no_tta": plain})


EXPORT_SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".pt"}


def export(model: nn.Module, path: str | Path, fmt: str) -> Path:
    """An ONNX, torch.export (``pt2``) or traced TorchScript file of ``model``, any batch size; input float
    (B,3,32,32) in [0,1]. torch.jit warns that TorchScript is deprecated: pt2 is its successor. ``model``
    itself is left as it was (a copy is exported, in the plain memory format)."""
    model = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    path = Path(path)
    example = torch.rand(2, 3, 32, 32)
    if fmt == "torchscript":
        with torch.no_grad():
            torch.jit.trace(model, example).save(str(path))
    elif fmt == "pt2":
        batch = torch.export.Dim.DYNAMIC
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), str(path))
    elif fmt == "onnx":
        torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    else:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(EXPORT_SUFFIXES)}")
    return path


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, calibration: torch.Tensor | None = None) -> Path:
    """int8 ONNX model: static QDQ quantization (per-channel weights, activations calibrated on
    ``calibration``, float images) when calibration images are given, else dynamic (weights only)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    out_path = Path(out_path)
    pre = out_path.with_name(out_path.stem + ".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    try:
        if calibration is None:
            quantize_dynamic(str(pre), str(out_path), weight_type=QuantType.QInt8)
        else:
            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self.batches = iter([{"image": b.numpy()} for b in calibration.split(32)])

                def get_next(self):
                    return next(self.batches, None)

            quantize_static(str(pre), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        pre.unlink(missing_ok=True)
    return out_path


def run_exported(path: str | Path, x: torch.Tensor) -> torch.Tensor:
    """Logits of an exported file (``.onnx`` via onnxruntime, ``.pt2`` torch.export, ``.pt`` TorchScript) for
    float images."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    with torch.no_grad():
        if path.suffix == ".pt2":
            return torch.export.load(str(path)).module()(x)
        return torch.jit.load(str(path))(x)


def export_command(args: argparse.Namespace) -> None:
    model = load_folder(args.weights)
    if args.format == "onnx":
        import importlib.util
        missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
        if missing:
            fail(f"ONNX export needs {' and '.join(missing)}: pip install {' '.join(missing)}")
    suffix = EXPORT_SUFFIXES[args.format]
    path = Path(args.out) if args.out else CHECKPOINTS / "exports" / Path(args.weights).name / f"model{suffix}"
    if path.suffix != suffix:
        fail(f"--format {args.format} writes a {suffix} file, not {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    export(model, path, args.format)
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
    result = {"file": str(path), "format": args.format,
              "max_abs_diff": float((run_exported(path, x) - reference).abs().max())}
    if args.int8:
        if args.format != "onnx":
            fail("--int8 needs --format onnx")
        calibration = None
        if not isinstance(model, ViT):  # conv nets: static quantization calibrated on training images
            try:
                images, _ = load_split("train", args.data)
            except (OSError, ValueError) as e:
                fail(f"calibration images: {e}")
            pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:512]
            calibration = images[pick].float() / 255
        q = quantize_onnx(path, path.with_name(path.stem + ".int8.onnx"), calibration)
        agree = float((run_exported(q, x).argmax(1) == reference.argmax(1)).float().mean())
        result.update({"int8_file": str(q), "int8_top1_agreement_random_inputs": agree})
    print_json(result)


# --------------------------------------------------------------------------- CLI

def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=["compact", "resnet18", "resnet34", "vit"], default="compact")
    p.add_argument("--data", default=str(default_data("cifar10-jpg")),
                   help="CIFAR-10 ImageFolder root with train/ and test/ (else torchvision downloads it)")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--label-smoothing", type=float, default=None)
    p.add_argument("--tta", type=int, choices=list(TTA_LEVELS), default=None)
    p.add_argument("--widths", type=int, nargs=3, default=None, help="compact net block widths")
    p.add_argument("--flip", choices=Augmented.FLIPS, default=None, help="mirroring (default: the recipe's)")
    p.add_argument("--augment", choices=list(Augmented.POLICIES), default=None,
                   help="a torchvision augmentation policy on top of flip + translate (default: the recipe's)")
    p.add_argument("--mix", choices=list(BATCH_MIXES), default=None,
                   help="blend pairs of training images and their labels (default: the recipe's, none)")
    p.add_argument("--teacher", nargs="+", default=[], metavar="FOLDER",
                   help="trained classifiers' weights folders to distil from (half the loss on the teachers' "
                        "mean probabilities, see --distillation), e.g. weights/compact-cifar10 for the ViT")
    p.add_argument("--distillation", choices=["hard", "soft"], default="hard",
                   help="learn the teachers' top class (hard, DeiT) or their probabilities (soft, Hinton)")
    p.add_argument("--lookahead", action=argparse.BooleanOptionalAction, default=None,
                   help="airbench's Lookahead on the weights (default: the recipe's)")
    p.add_argument("--model-config", nargs="+", default=[], metavar="KEY=VALUE",
                   help="change the model's config, e.g. dim=192 depth=6 heads=3 for a smaller ViT, width=32 "
                        "for a narrower ResNet")
    p.add_argument("--val-size", type=int, default=5000,
                   help="held-out training images for checkpoint selection (0: train on all, keep the last)")
    p.add_argument("--init", default=None,
                   help="start from this weights folder of the same model (a new schedule, e.g. a longer run)")
    p.add_argument("--limit", type=int, default=None, help="use only this many training images (smoke runs)")
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--eval-every", type=int, default=None, help="steps (default: one epoch)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on CUDA, and the recipe's on a CPU; a no-op on CPUs without bf16 "
                        "units, where it would be slower)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward (for GPUs; on the 2-core CPU: 1.04x for the ViT, "
                        "1.01x for ResNet-18, python -m bench.classify --training)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--out", default=None, help="checkpoint folder")
    p.add_argument("--weights-out", default=None, help="weights folder (default weights/<name>)")


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True)
    p.add_argument("--data", default=str(default_data("cifar10-jpg/test")))
    p.add_argument("--tta", type=int, choices=list(TTA_LEVELS), default=0,
                   help="test-time augmentation: " + "; ".join(f"{k} {v}" for k, v in TTA_LEVELS.items()))
    p.add_argument("--frame", default=None, metavar="DETECTOR",
                   help="frame each photo's subject with this detector first, as the tab does (weights/yolo-voc)")


def add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True)
    p.add_argument("--format", choices=list(EXPORT_SUFFIXES), default="onnx",
                   help="onnx (onnxruntime), pt2 (torch.export: torch.export.load(f).module()) or torchscript")
    p.add_argument("--out", default=None,
                   help="file (default: checkpoints/exports/<weights name>/model.onnx, .pt2 or .pt)")
    p.add_argument("--int8", action="store_true", help="also write an int8-quantized ONNX model (*.int8.onnx)")
    p.add_argument("--data", default=str(default_data("cifar10-jpg")), help="CIFAR-10 root for calibration")


def add_average_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", nargs="+", required=True,
                   help="weights folders and training checkpoint files (best.pt, checkpoint.pt) of one ViT; the "
                        "first must be a folder (its config.json is the soup's)")
    p.add_argument("--out", required=True, help="weights folder to write")
    p.add_argument("--greedy", action="store_true",
                   help="keep a member only if it does not lower the soup's validation accuracy")
    p.add_argument("--data", default=str(default_data("cifar10-jpg")), help="CIFAR-10 root with train/ and test/")
    p.add_argument("--val-size", type=int, default=5000, help="the training run's --val-size")
    p.add_argument("--tta", type=int, choices=list(TTA_LEVELS), default=1)
    p.add_argument("--threads", type=int, default=None)


def main() -> None:
    args = cli(__doc__, add_train_args, add_eval_args, extra={"export": add_export_args, "average": add_average_args})
    if args.command == "evaluate":
        evaluate_command(args)
    elif args.command == "average":
        average_command(args)
    elif args.command == "export":
        export_command(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
