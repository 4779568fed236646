"""Train and evaluate the YOLO-style detector (models.detect) on PASCAL VOC.

    python -m training.detect --threads 1          # writes weights/yolo-voc/
    python -m training.detect evaluate --weights weights/yolo-voc [--data DIR] [--split val] [--year 2007]

``--data`` is the folder holding ``VOCdevkit/`` (default ``../shared/datasets``) or a ``VOCdevkit/VOC20xx``
folder itself; VOC2007 test and VOC2012 work the same way (``--year 2012``, ``--split test``).

The shipped weights come from five stages, sized for a CPU. Stage 1 (``python -m training.detect``): the
trunk is the CIFAR-10 CompactNet (``--backbone-init weights/compact-cifar10``), frozen; its stride-8
features of several augmented views per training image (plain, flipped, and random scale/crop/flip/colour
jitter) are computed once and cached under ``data_cache/``, and the new stride-16/32 stages, the FPN/PAN
neck and the head train on them. Stage 2 (``--unfreeze --init weights/yolo-voc --lr 5e-4 --epochs 26``)
fine-tunes the whole detector end to end on freshly augmented images in bf16, at a lower lr with warm-up
(measured: one AdamW step at 2e-3 without warm-up took the stage-1 detector from 0.279 to 0.013 mAP50 on
64 val images; at 1e-4 it went to 0.297). Stages 3-5 repeat stage 2 with ``--multiscale`` (each batch
at one of several sizes) at larger inputs, 192-288, 224-320, then 256-352 px; ``weights/yolo-voc/README.md`` has the commands.
``--pretrained`` starts a ResNet-18 trunk from torchvision's ImageNet weights.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

import weights
from models.detect import (VOC_CLASSES, YOLO, YOLOConfig, check_size, letterbox, letterbox_scales, to_image_boxes,
                           valid_size)
from training.common import (CHECKPOINTS, ROOT, cli, default_data, fail, from_pretrained, load_weights_folder,
                             print_json, push_to_hub)
from training.loop import TrainConfig, fit, precision

CACHE = ROOT / "data_cache"
NAME = "yolo-voc"  # the registry entry (weights/ folder) this trainer produces
FILL = 0.5  # letterbox / canvas grey


# --------------------------------------------------------------------------- data

def voc_root(data: str | Path | None, year: str) -> tuple[Path, str]:
    """(the folder holding VOCdevkit/, year) from a --data path that may also be VOCdevkit/VOC20xx."""
    path = Path(data) if data else default_data(".")
    if (path / "JPEGImages").is_dir() and path.name.startswith("VOC"):
        return path.parent.parent, path.name[3:]
    return path, year


def voc_dataset(data: str | Path | None, split: str, year: str = "2007"):
    from torchvision.datasets import VOCDetection
    root, year = voc_root(data, year)
    try:
        return VOCDetection(str(root), year=year, image_set=split, download=False)
    except (RuntimeError, ValueError, OSError) as e:
        raise FileNotFoundError(f"no VOC{year} {split!r} split under {root}/VOCdevkit: {e}") from e


def voc_objects(annotation: dict[str, Any]) -> list[dict[str, Any]]:
    """VOCDetection's annotation dict -> [{name, box (x0, y0, x1, y1) 0-based pixels, difficult, truncated}]."""
    objects = annotation["annotation"].get("object", [])
    if isinstance(objects, dict):
        objects = [objects]
    return [{"name": o["name"].strip(),
             "box": (float(o["bndbox"]["xmin"]) - 1, float(o["bndbox"]["ymin"]) - 1,
                     float(o["bndbox"]["xmax"]), float(o["bndbox"]["ymax"])),
             "difficult": str(o.get("difficult", "0")).strip() == "1",
             "truncated": str(o.get("truncated", "0")).strip() == "1"} for o in objects]


def parse_target(annotation: dict[str, Any], classes: list[str] = VOC_CLASSES) -> dict[str, torch.Tensor]:
    """VOCDetection's annotation dict -> boxes (G, 4) xyxy pixels (0-based), labels (G,), difficult (G,)."""
    objects = voc_objects(annotation)
    return {"boxes": torch.tensor([o["box"] for o in objects], dtype=torch.float).reshape(-1, 4),
            "labels": torch.tensor([classes.index(o["name"]) for o in objects], dtype=torch.long),
            "difficult": torch.tensor([o["difficult"] for o in objects], dtype=torch.bool)}


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255


def augment(image: Image.Image, boxes: torch.Tensor, size: int, rng: random.Random,
            scale: tuple[float, float] = (0.6, 1.4), colour: bool = True, flip: bool | None = None,
            jitter: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training view: colour jitter, horizontal flip, random scale and placement on a ``size`` square
    canvas (crops when larger). Returns (3, size, size) image, kept boxes, and the kept boxes' indices."""
    from torchvision.transforms import v2
    if colour:
        image = v2.ColorJitter(0.3, 0.3, 0.3, 0.02)(image)
    w, h = image.size
    boxes = boxes.clone()
    if flip if flip is not None else rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    s = size / max(w, h) * (rng.uniform(*scale) if jitter else 1.0)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    dx = rng.randint(min(0, size - nw), max(0, size - nw)) if jitter else 0
    dy = rng.randint(min(0, size - nh), max(0, size - nh)) if jitter else 0
    resized = to_tensor(image.resize((nw, nh), Image.BILINEAR))
    canvas = torch.full((3, size, size), FILL)
    x0, y0, x1, y1 = max(0, dx), max(0, dy), min(size, dx + nw), min(size, dy + nh)
    canvas[:, y0:y1, x0:x1] = resized[:, y0 - dy:y1 - dy, x0 - dx:x1 - dx]
    boxes = boxes * torch.tensor([nw / w, nh / h, nw / w, nh / h]) + torch.tensor([dx, dy, dx, dy])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped = boxes.clamp(0, size)
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = ((cw * ch) >= 0.3 * area) & (cw >= 2) & (ch >= 2)  # mostly cropped-out objects are dropped
    return canvas, clipped[keep], keep.nonzero().flatten()


class VOCTrain:
    """VOC training images (difficult objects dropped), decoded once; ``view(i, rng)`` augments one."""

    def __init__(self, dataset, size: int):
        self.size, self.images, self.targets = size, [], []
        for image, annotation in tqdm(dataset, desc="reading VOC", leave=False):
            t = parse_target(annotation)
            keep = ~t["difficult"]
            self.images.append(image.convert("RGB"))
            self.targets.append({"boxes": t["boxes"][keep], "labels": t["labels"][keep]})

    def __len__(self) -> int:
        return len(self.images)

    def view(self, i: int, rng: random.Random, size: int | None = None,
             **kw: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, boxes, kept = augment(self.images[i], self.targets[i]["boxes"], size or self.size, rng, **kw)
        return x, {"boxes": boxes, "labels": self.targets[i]["labels"][kept]}


def cache_features(model: YOLO, data: VOCTrain, views: int, seed: int, path: Path,
                   batch: int = 16) -> dict[str, Any]:
    """Trunk features of ``views`` views of every image: view 0 plain, 1 flipped, the rest random
    (scale/crop/flip/colour). Stored fp16 in ``path`` (mmap-loaded), with their boxes and labels."""
    if path.exists():
        return torch.load(path, mmap=True, weights_only=True)
    rng = random.Random(seed)
    n, s = len(data), data.size
    grid = -(-s // 8)
    feats = torch.empty(n * views, model.trunk.channels, grid, grid, dtype=torch.float16)
    boxes, labels = [], []
    jobs = [(i, v) for i in range(n) for v in range(views)]
    model.eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(jobs), batch), desc="caching trunk features"):
            xs = []
            for i, v in jobs[start:start + batch]:
                kw = {"colour": False, "jitter": False, "flip": v == 1} if v < 2 else {}
                x, t = data.view(i, rng, **kw)
                xs.append(x)
                boxes.append(t["boxes"])
                labels.append(t["labels"])
            x = torch.stack(xs).contiguous(memory_format=torch.channels_last)
            feats[start:start + len(xs)] = model.features(x).half()
    blob = {"features": feats, "boxes": boxes, "labels": labels, "views": views}
    CACHE.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return torch.load(path, mmap=True, weights_only=True)


class CachedViews:
    """Index i = image i; ``collate`` picks one cached view per image at random."""

    def __init__(self, blob: dict[str, Any], n_images: int):
        self.blob, self.n, self.views = blob, n_images, blob["views"]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        rows = [i * self.views + int(torch.randint(self.views, ())) for i in indices]
        x = torch.stack([self.blob["features"][r] for r in rows]).float()
        return x, [{"boxes": self.blob["boxes"][r], "labels": self.blob["labels"][r]} for r in rows]


class AugmentedImages:
    """End-to-end training (``--unfreeze``): a fresh random view per image per epoch, every batch at one
    size drawn from ``sizes`` (YOLO-style multi-scale training; default: the data's single size)."""

    def __init__(self, data: VOCTrain, seed: int, sizes: list[int] | None = None):
        self.data, self.rng, self.sizes = data, random.Random(seed), sizes or [data.size]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: list[int]) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        size = self.rng.choice(self.sizes)
        views = [self.data.view(i, self.rng, size) for i in indices]
        return torch.stack([v[0] for v in views]), [v[1] for v in views]


# --------------------------------------------------------------------------- metrics

def voc_ap(recall: np.ndarray, precision: np.ndarray, eleven_point: bool) -> float:
    """The VOC devkit's AP: 11-point (VOC2007) or all-point (VOC2010+) interpolation."""
    if eleven_point:
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.linspace(0, 1, 11)]))
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope
    i = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[i + 1] - r[i]) * p[i + 1]))


def voc_eval(preds: list[dict[str, torch.Tensor]], gts: list[dict[str, torch.Tensor]], num_classes: int,
             iou_threshold: float = 0.5) -> dict[str, list[float]]:
    """Per-class AP the VOC devkit way: detections sorted by score are greedily matched to the
    unmatched ground truth of highest IoU; matches to ``difficult`` boxes count neither way, and
    difficult boxes are not among the positives. Classes without positives get NaN."""
    from torchvision.ops import box_iou
    out: dict[str, list[float]] = {"ap07": [], "ap": []}
    for c in range(num_classes):
        dets, n_pos = [], 0
        gt_c = []
        for img, (p, g) in enumerate(zip(preds, gts)):
            m = g["labels"] == c
            gb, gd = g["boxes"][m], g.get("difficult", torch.zeros(len(g["labels"]), dtype=torch.bool))[m]
            n_pos += int((~gd).sum())
            gt_c.append((gb, gd, torch.zeros(len(gb), dtype=torch.bool)))
            pm = p["labels"] == c
            for box, score in zip(p["boxes"][pm], p["scores"][pm]):
                dets.append((float(score), img, box))
        if n_pos == 0:
            out["ap07"].append(float("nan"))
            out["ap"].append(float("nan"))
            continue
        dets.sort(key=lambda d: -d[0])
        tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
        for k, (_, img, box) in enumerate(dets):
            gb, gd, used = gt_c[img]
            if len(gb) == 0:
                fp[k] = 1
                continue
            iou = box_iou(box[None], gb)[0]
            best = int(iou.argmax())
            if iou[best] >= iou_threshold:
                if gd[best]:
                    continue
                if not used[best]:
                    tp[k], used[best] = 1, True
                else:
                    fp[k] = 1
            else:
                fp[k] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / n_pos
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        out["ap07"].append(voc_ap(recall, precision, True))
        out["ap"].append(voc_ap(recall, precision, False))
    return out


def detection_metrics(preds: list[dict[str, torch.Tensor]], gts: list[dict[str, torch.Tensor]],
                      classes: list[str]) -> dict[str, Any]:
    """map50 (torchmetrics MeanAveragePrecision, IoU 0.5, difficult boxes as COCO "crowd" = ignored),
    map50_voc07 (11-point) and map50_voc (all-point, VOC devkit matching), per-class AP50."""
    from torchmetrics.detection import MeanAveragePrecision
    metric = MeanAveragePrecision(iou_thresholds=[0.5], class_metrics=True)
    metric.update([{k: p[k] for k in ("boxes", "scores", "labels")} for p in preds],
                  [{"boxes": g["boxes"], "labels": g["labels"],
                    "iscrowd": g.get("difficult", torch.zeros(len(g["labels"]), dtype=torch.bool)).long()}
                   for g in gts])
    tm = metric.compute()
    voc = voc_eval(preds, gts, len(classes))
    # torchmetrics says -1 for a class with no ground truth; undefined APs are NaN here (null in the JSON line)
    per_class_tm = {c: ap if ap >= 0 else float("nan")
                    for c, ap in zip(tm["classes"].tolist(), tm["map_per_class"].tolist())}
    return {"map50": round(float(tm["map_50"]), 4),
            "map50_voc07": round(float(np.nanmean(voc["ap07"])), 4),
            "map50_voc": round(float(np.nanmean(voc["ap"])), 4),
            "per_class_ap50": {c: round(per_class_tm.get(i, float("nan")), 4) for i, c in enumerate(classes)}}


@torch.no_grad()
def predict_dataset(model: YOLO, dataset, size: int | None = None, batch: int = 16, limit: int | None = None,
                    score_threshold: float = 0.01, nms_iou: float = 0.5,
                    ) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """Detections (in original pixels, clipped to the image as the tab's) and ground truth for every image of a
    VOCDetection dataset."""
    model.eval()
    device = next(model.parameters()).device
    size = size or model.config.image_size
    n = len(dataset) if limit is None else min(limit, len(dataset))
    preds, gts = [], []
    for start in tqdm(range(0, n, batch), desc="detecting", leave=False):
        xs, frames = [], []
        for i in range(start, min(n, start + batch)):
            image, annotation = dataset[i]
            gts.append(parse_target(annotation))
            pixels = to_tensor(image)
            x, _, resized = letterbox(pixels, size, FILL)
            xs.append(x)
            frames.append((letterbox_scales(tuple(pixels.shape[-2:]), resized), *pixels.shape[-2:]))
        raw = model(torch.stack(xs).to(device).contiguous(memory_format=torch.channels_last))
        for det, frame in zip(model.postprocess(raw, (size, size), score_threshold, nms_iou), frames):
            det = {k: v.cpu() for k, v in det.items()}
            preds.append({**det, "boxes": to_image_boxes(det["boxes"], *frame)})
    return preds, gts


# --------------------------------------------------------------------------- train

def load_backbone(model: YOLO, folder: str | Path) -> None:
    """Copy a CompactNet weights folder (models.classify) into the detector's trunk."""
    from models.classify import CompactNet
    net = CompactNet.from_pretrained(str(folder))
    if list(net.config.widths) != list(model.config.compact_widths):
        fail(f"{folder}: widths {net.config.widths} differ from the detector's {model.config.compact_widths}")
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("head")}
    model.trunk.load_state_dict(state)


@torch.no_grad()
def recalibrate_bn(model: YOLO, data: VOCTrain, n: int = 256, batch: int = 16) -> None:
    """Re-estimate the trunk's BatchNorm statistics on VOC views (the CIFAR ones are for 32-px images)."""
    for m in model.trunk.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.trunk.train()
    rng = random.Random(1)
    n = min(n, len(data))
    for start in range(0, n, batch):
        x = torch.stack([data.view(i, rng)[0] for i in range(start, min(n, start + batch))])
        model.features(x.contiguous(memory_format=torch.channels_last))
    model.trunk.eval()


def train(args: argparse.Namespace) -> None:
    t0 = time.time()
    torch.manual_seed(args.seed)
    check_size_arg("--size", args.size)
    if args.multiscale and (not args.unfreeze or any(not valid_size(s) for s in args.multiscale)):
        fail(f"--multiscale {' '.join(map(str, args.multiscale))}: needs --unfreeze and sizes that are multiples of 32, "
             "at least 64")
    try:
        train_set = voc_dataset(args.data, args.train_split, args.year)
        val_set = voc_dataset(args.data, args.val_split, args.year)
    except FileNotFoundError as e:
        fail(str(e))
    if args.init:  # continue from a whole detector, e.g. a frozen-trunk run fine-tuned end to end
        model = load_weights_folder(YOLO, Path(args.init))
        if model.config.image_size != args.size:  # the size it is fine-tuned at is the size it detects at
            if not args.unfreeze:
                fail(f"--init {args.init} was trained at {model.config.image_size} px; pass --size "
                     f"{model.config.image_size}, or --unfreeze to fine-tune it at {args.size} px")
            resized = YOLO(dataclasses.replace(model.config, image_size=args.size))
            resized.load_state_dict(model.state_dict())
            model = resized
    elif args.pretrained:
        from torchvision.models import ResNet18_Weights, resnet18
        config = YOLOConfig(backbone="resnet18", image_size=args.size, mean=[0.485, 0.456, 0.406],
                            std=[0.229, 0.224, 0.225], backbone_init="ImageNet (torchvision resnet18)")
        model = YOLO(config)
        r = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
        model.trunk.load_state_dict(nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2).state_dict())
        model.stage4.load_state_dict(r.layer3.state_dict())
        model.stage5.load_state_dict(r.layer4.state_dict())
    else:
        where = Path(args.backbone_init).resolve() if args.backbone_init else None
        if where is not None and where.is_relative_to(ROOT):
            where = where.relative_to(ROOT)
        init = f"CIFAR-10 ({where})" if where is not None else "scratch"
        widths = {}
        if args.backbone_init:  # the trunk takes the widths of the CompactNet it starts from
            try:
                config_file = Path(args.backbone_init) / "config.json"
                widths = {"compact_widths": json.loads(config_file.read_text())["widths"]}
            except (OSError, ValueError, KeyError) as e:
                fail(f"--backbone-init {args.backbone_init}: not a compact-cifar10 weights folder ({e})")
        model = YOLO(YOLOConfig(image_size=args.size, backbone_init=init, **widths))
        if args.backbone_init:
            load_backbone(model, args.backbone_init)
    data = VOCTrain(train_set if not args.limit else torch.utils.data.Subset(train_set, range(args.limit)), args.size)
    print(f"{len(data)} training images, {sum(len(t['labels']) for t in data.targets)} objects; "
          f"{torch.get_num_threads()} threads", flush=True)
    model = model.to(memory_format=torch.channels_last)
    frozen = not args.unfreeze
    if frozen:
        if args.backbone_init and not args.pretrained and not args.init:
            recalibrate_bn(model, data)
        model.trunk.requires_grad_(False)
        key = hashlib.sha1(json.dumps([str(voc_root(args.data, args.year)), args.train_split, len(data), args.size,
                                       args.views, args.seed, args.backbone_init, args.pretrained,
                                       args.init]).encode()).hexdigest()[:8]
        blob = cache_features(model, data, args.views, args.seed, CACHE / f"voc-trunk-{key}.pt")
        train_data: Any = CachedViews(blob, len(data))
        val_n = min(args.val_images, len(val_set))
        val_feats, val_gts, val_frames = [], [], []
        model.eval()  # the frozen trunk's BatchNorm uses its running statistics (cache_features may not have run)
        with torch.no_grad():  # the selection subset of val, cached the same way (plain views)
            for i in tqdm(range(val_n), desc="val features", leave=False):
                image, annotation = val_set[i]
                pixels = to_tensor(image)
                x, _, resized = letterbox(pixels, args.size, FILL)
                x = x[None].to(next(model.parameters()).device).contiguous(memory_format=torch.channels_last)
                val_feats.append(model.features(x)[0].half().cpu())
                val_gts.append(parse_target(annotation))
                val_frames.append((letterbox_scales(tuple(pixels.shape[-2:]), resized), *pixels.shape[-2:]))
    else:
        train_data = AugmentedImages(data, args.seed, args.multiscale)
    print(f"data ready after {(time.time() - t0) / 60:.1f} min", flush=True)

    def forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        return m.forward_features(x) if frozen else m(x)

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, list[dict[str, torch.Tensor]]]) -> torch.Tensor:
        x, targets = batch
        if frozen:
            m.trunk.eval()  # frozen trunk: its BatchNorm statistics stay put
        size = (args.size, args.size) if frozen else tuple(x.shape[-2:])  # frozen: x is trunk features
        return m.loss(forward(m, x), targets, size)["loss"]

    def evaluate(m: nn.Module) -> dict[str, float]:
        if not frozen:
            preds, gts = predict_dataset(m, val_set, args.size, limit=args.val_images)
        else:
            preds = []
            for start in range(0, len(val_feats), 32):
                raw = forward(m, torch.stack(val_feats[start:start + 32]).to(next(m.parameters()).device).float())
                dets = [{k: v.cpu() for k, v in d.items()}
                        for d in m.postprocess(raw, (args.size, args.size), 0.01, 0.5)]
                frames = val_frames[start:start + 32]
                preds += [{**d, "boxes": to_image_boxes(d["boxes"], *f)} for d, f in zip(dets, frames)]
            gts = val_gts
        r = detection_metrics(preds, gts, m.classes)
        return {"map50": r["map50"], "map50_voc07": r["map50_voc07"]}

    steps_per_epoch = len(train_data) // args.batch_size
    steps = args.epochs * steps_per_epoch
    out_dir = Path(args.out) if args.out else CHECKPOINTS / "detect-yolo"
    cfg = TrainConfig(steps=steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      optimizer="adamw", schedule="cosine", warmup_steps=min(300, steps // 10), min_lr_ratio=0.02,
                      grad_clip=10.0, bf16=args.bf16, eval_every=args.eval_every or 4 * steps_per_epoch,
                      monitor="map50", mode="max", max_minutes=args.max_minutes, seed=args.seed,
                      out_dir=str(out_dir), resume=not args.fresh)
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{n_params / 1e6:.2f}M parameters ({n_train / 1e6:.2f}M trained), {steps} steps of {args.batch_size} "
          f"({args.epochs} epochs)", flush=True)
    result = fit(model, train_data, loss_fn, cfg, evaluate=evaluate, collate_fn=train_data.collate)
    model.eval()

    folder = Path(args.weights_out) if args.weights_out else weights.local_dir(NAME)
    weights.save(model.to(memory_format=torch.contiguous_format), folder)
    shipped = from_pretrained(YOLO, folder).to(memory_format=torch.channels_last)
    preds, gts = predict_dataset(shipped, val_set, args.size, limit=args.limit)  # limit: smoke runs only
    report = detection_metrics(preds, gts, shipped.classes)
    print(json.dumps(report), flush=True)
    total = (time.time() - t0) / 60
    write_model_card(folder, report, args, result, n_params, n_train, len(data), len(val_set), total, steps_per_epoch)
    print(f"wrote {folder} ({total:.1f} min in all)", flush=True)
    if args.push_to_hub:
        print(push_to_hub(folder, args.push_to_hub))


def write_model_card(folder: Path, report: dict[str, Any], args: argparse.Namespace, result: Any, n_params: int,
                     n_train: int, n_images: int, n_val: int, total: float, steps_per_epoch: int) -> None:
    command = "python -m training.detect " + " ".join(sys.argv[1:])
    config = YOLO.from_pretrained(str(folder)).config
    per_class = "\n".join(f"| {c} | {a:.4f} |" for c, a in report["per_class_ap50"].items())
    history = "\n".join(f"| {h['step']} | {h['minutes']:.1f} | {h['train_loss']:.4f} | {h['map50']:.4f} |"
                        for h in result.history)
    recipe = ("trunk frozen; its stride-8 features of " f"{args.views} views per image (plain, flipped, "
              f"{args.views - 2} random scale 0.6-1.4 / crop / flip / colour jitter) cached once, then the "
              "stride-16/32 stages, neck and head trained on them") if not args.unfreeze else \
        "trained end to end on freshly augmented views (flip, scale/crop jitter, colour jitter)"
    if args.multiscale:
        recipe += f", each batch at one size drawn from {', '.join(map(str, args.multiscale))} px (multi-scale)"
    if args.init:
        recipe = f"every weight started from the detector in `{args.init}` (its card: how it was trained), then {recipe}"
    extra = (f"Evaluated on VOC{voc_root(args.data, args.year)[1]} `{args.val_split}` ({n_val} images, images "
             f"downscaled to a longer side of 320 px in this copy), `difficult` objects left out as in the VOC "
             f"devkit, on the shipped (fp16-stored) weights: `map50` is torchmetrics' MeanAveragePrecision at "
             f"IoU 0.5 (COCO-style 101-point interpolation, difficult boxes passed as crowd = ignored), "
             f"`map50_voc07` the VOC2007 11-point AP and `map50_voc` the all-point VOC AP (devkit matching). "
             f"Detections: score > 0.01, NMS IoU 0.5, at most 100 per image, {args.size}x{args.size} letterbox.\n\n"
             f"Backbone initialization: **{config.backbone_init}** (no ImageNet weights were available "
             f"here). Model: {config.backbone} trunk (stride 8) + new stride-16/32 stages "
             f"{config.stage_widths}, FPN + PAN neck of width {config.neck_width}, decoupled YOLOX-style "
             f"anchor-free head (bounded sigmoid centre offsets, log-space sizes, CIoU box loss, BCE "
             f"objectness and classes); {n_params / 1e6:.2f}M parameters, {n_train / 1e6:.2f}M trained.\n\n"
             f"Training data: VOC2007 `{args.train_split}` ({n_images} images), {recipe}. "
             f"{result.steps_done} steps of batch {args.batch_size} ({result.steps_done / steps_per_epoch:.1f} "
             f"epochs), AdamW lr {args.lr} wd {args.weight_decay}, cosine; checkpoint selected on mAP50 of the "
             f"first {args.val_images} `{args.val_split}` images. {total:.0f} min in all (training loop "
             f"{result.minutes:.0f} min) on the CPU ({platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} torch threads, {precision(args.bf16)}).\n\n"
             f"Below what the architecture family reaches with compute: YOLOv1 reports 63.4 mAP on VOC2007 "
             f"test with ImageNet pretraining and 07+12 data. What this card's number lacks is an ImageNet "
             f"backbone (or a long from-scratch schedule), {'' if args.unfreeze else 'end-to-end training (`--unfreeze`), '}"
             f"and hundreds of epochs at 416+ px, i.e. GPU hours.\n\n"
             f"| class | AP50 (torchmetrics) |\n|---|---|\n{per_class}\n\n"
             f"| step | minutes | train loss | selection mAP50 |\n|---|---|---|---|\n{history}\n")
    metrics = {"map50": report["map50"], "map50_voc07": report["map50_voc07"], "map50_voc": report["map50_voc"]}
    weights.write_card(folder, NAME, metrics=metrics, dataset="voc2007", dataset_name="PASCAL VOC 2007",
                       task_type="object-detection", command=command, extra=extra,
                       tags=["object-detection", "yolo", "pascal-voc"],
                       description="A single-stage YOLO-style detector for the 20 PASCAL VOC classes.")


# --------------------------------------------------------------------------- evaluate

def check_size_arg(flag: str, size: int) -> None:
    try:
        check_size(size)
    except ValueError as e:
        fail(f"{flag}: {e}")


def evaluate_command(args: argparse.Namespace) -> None:
    folder = Path(args.weights)
    if args.size is not None:
        check_size_arg("--size", args.size)
    model = load_weights_folder(YOLO, folder).to(memory_format=torch.channels_last)
    try:
        dataset = voc_dataset(args.data, args.split, args.year)
    except FileNotFoundError as e:
        fail(str(e))
    if not 0 <= args.start < len(dataset):
        fail(f"--start {args.start}: the {args.split} split has {len(dataset)} images")
    dataset = torch.utils.data.Subset(dataset, range(args.start, len(dataset)))
    start = time.time()
    preds, gts = predict_dataset(model, dataset, args.size, limit=args.limit, score_threshold=args.score_threshold,
                                 nms_iou=args.nms_iou)
    report = detection_metrics(preds, gts, model.classes)
    print_json({"weights": str(folder), "data": str(voc_root(args.data, args.year)[0]), "year": voc_root(args.data, args.year)[1],
                "split": args.split, "start": args.start, "images": len(preds), **report,
                "seconds": round(time.time() - start, 1)})


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="folder holding VOCdevkit/ (default ../shared/datasets)")
    p.add_argument("--year", default="2007")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--size", type=int, default=192, help="letterboxed input size (multiple of 32)")
    p.add_argument("--backbone-init", default=str(ROOT / "weights" / "compact-cifar10"),
                   help="CompactNet weights folder for the trunk ('' = from scratch)")
    p.add_argument("--pretrained", action="store_true", help="ResNet-18 trunk from torchvision ImageNet weights")
    p.add_argument("--unfreeze", action="store_true", help="train the trunk too, on fresh augmentations")
    p.add_argument("--multiscale", type=int, nargs="+", default=None, metavar="SIZE",
                   help="with --unfreeze: each batch at one of these sizes (multiples of 32); --size is the eval size")
    p.add_argument("--init", default=None, help="start from a whole yolo-voc weights folder (overrides --backbone-init)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast where the CPU or GPU runs it fast (AVX-512 bf16 / AMX here)")
    p.add_argument("--views", type=int, default=3, help="cached views per image (frozen trunk)")
    p.add_argument("--epochs", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--val-images", type=int, default=300, help="val images used for checkpoint selection")
    p.add_argument("--limit", type=int, default=None, help="train on the first N images (smoke tests)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop the loop after this long")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="checkpoint folder")
    p.add_argument("--weights-out", default=None, help="weights folder (default weights/yolo-voc)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--year", default="2007")
    p.add_argument("--split", default="val")
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--start", type=int, default=0, help="skip the split's first N images (training selects its "
                   "checkpoint on the first --val-images of val: --start 300 leaves those out)")
    p.add_argument("--score-threshold", type=float, default=0.01)
    p.add_argument("--nms-iou", type=float, default=0.5)


def main() -> None:
    args = cli(__doc__.splitlines()[0], add_train_args, add_eval_args)
    if args.command == "evaluate":
        evaluate_command(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
