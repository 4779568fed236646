"""A single-stage YOLO-style detector: backbone (strides 8/16/32), an FPN + PAN neck, a dense head.

Input: RGB floats in [0, 1], (B, 3, S, S) letterboxed images (``letterbox`` below). Every cell of the
three output grids predicts, YOLOX-style (anchor-free, decoupled head):

* a box: centre = cell centre + bounded offset ``(2r * sigmoid(t) - r) * stride`` (``r`` cells either
  way, YOLOv5's bounded offsets widened to the assignment radius), size = ``exp(t) * anchor * stride``
  (log-space);
* an objectness logit and ``num_classes`` class logits (scores are ``sigmoid(obj) * sigmoid(cls)``).

Training: a ground-truth box is assigned to one level by its size and to the cells whose centres lie
within ``radius`` strides of its centre (smallest box wins a shared cell); losses are a CIoU box loss
(``torchvision.ops.complete_box_iou_loss``), BCE objectness on every cell and BCE classes on the
positives. ``postprocess`` keeps scores above a threshold and runs per-class ``batched_nms``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from PIL import Image
from torch import nn
from torchvision.ops import batched_nms, box_convert, complete_box_iou_loss

from models.classify import CompactTrunk

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]


@dataclass
class YOLOConfig:
    classes: list[str] = field(default_factory=lambda: list(VOC_CLASSES))
    image_size: int = 192              # letterboxed training/inference size (any multiple of 32 works)
    backbone: str = "compact"          # compact (models.classify.CompactNet trunk) | resnet18 (torchvision)
    compact_widths: list[int] = field(default_factory=lambda: [32, 128, 256])
    whiten_kernel: int = 2
    stage_widths: list[int] = field(default_factory=lambda: [192, 256])  # the new stride-16/32 stages
    neck_width: int = 96
    head_width: int = 96
    head_depth: int = 1                # 3x3 convs in each of the class and box branches
    anchor: float = 4.0                # box size (in strides) that a zero size output means
    offset_range: float = 1.5          # centre offsets are bounded to +- this many cells
    radius: float = 1.25               # positives: cells whose centre is within this many strides
    level_limits: list[float] = field(default_factory=lambda: [64.0, 128.0])  # box max-side per level
    mean: list[float] = field(default_factory=lambda: [0.4914, 0.4822, 0.4465])  # CIFAR-10's (compact)
    std: list[float] = field(default_factory=lambda: [0.2470, 0.2435, 0.2616])
    score_threshold: float = 0.25
    nms_iou: float = 0.5
    max_detections: int = 100
    backbone_init: str = "scratch"     # what the trunk started from (recorded for the model card)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def conv_bn(c_in: int, c_out: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.SiLU(inplace=True))


class YOLO(nn.Module, PyTorchModelHubMixin):
    def __init__(self, config: YOLOConfig):
        super().__init__()
        if isinstance(config, dict):
            config = YOLOConfig(**config)
        self.config = config
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        if config.backbone == "compact":
            self.trunk = CompactTrunk(config.compact_widths, config.whiten_kernel, bn_momentum=0.9, pad_to_stride=True)
            c3 = self.trunk.channels
            w4, w5 = config.stage_widths
            self.stage4 = nn.Sequential(conv_bn(c3, w4, 3, 2), conv_bn(w4, w4))
            self.stage5 = nn.Sequential(conv_bn(w4, w5, 3, 2), conv_bn(w5, w5))
        elif config.backbone == "resnet18":
            from torchvision.models import resnet18
            r = resnet18()
            self.trunk = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2)
            c3, w4, w5 = 128, 256, 512
            self.stage4, self.stage5 = r.layer3, r.layer4
        else:
            raise ValueError(f"unknown backbone {config.backbone!r}: use compact or resnet18")
        n = config.neck_width
        self.lateral = nn.ModuleList([conv_bn(c, n, 1) for c in (c3, w4, w5)])
        self.top_down = nn.ModuleList([conv_bn(n, n) for _ in range(2)])   # P4, P3
        self.down = nn.ModuleList([conv_bn(n, n, 3, 2) for _ in range(2)])  # N3 -> N4, N4 -> N5
        self.bottom_up = nn.ModuleList([conv_bn(n, n) for _ in range(2)])  # N4, N5
        h, c = config.head_width, config.num_classes
        self.stems = nn.ModuleList([conv_bn(n, h, 1) for _ in range(3)])
        d = config.head_depth
        self.cls_convs = nn.ModuleList([nn.Sequential(*[conv_bn(h, h) for _ in range(d)]) for _ in range(3)])
        self.reg_convs = nn.ModuleList([nn.Sequential(*[conv_bn(h, h) for _ in range(d)]) for _ in range(3)])
        self.cls_out = nn.ModuleList([nn.Conv2d(h, c, 1) for _ in range(3)])
        self.reg_out = nn.ModuleList([nn.Conv2d(h, 5, 1) for _ in range(3)])  # 4 box + objectness
        prior = -4.595  # sigmoid^-1(0.01): start with low scores everywhere (RetinaNet's prior)
        for conv in self.cls_out:
            nn.init.constant_(conv.bias, prior)
        for conv in self.reg_out:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
            nn.init.constant_(conv.bias[4], prior)
        self.strides = (8, 16, 32)

    @property
    def classes(self) -> list[str]:
        return list(self.config.classes)

    # ------------------------------------------------------------------ forward

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Stride-8 trunk features of images in [0, 1] (what a frozen-trunk run caches)."""
        return self.trunk((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))

    def forward_features(self, c3: torch.Tensor) -> torch.Tensor:
        """Raw predictions (B, N, 5 + classes) for all cells of the three levels, from trunk features."""
        c4 = self.stage4(c3)
        c5 = self.stage5(c4)
        l3, l4, l5 = (lat(c) for lat, c in zip(self.lateral, (c3, c4, c5)))
        p5 = l5
        p4 = self.top_down[0](l4 + F.interpolate(p5, size=l4.shape[-2:], mode="nearest"))
        p3 = self.top_down[1](l3 + F.interpolate(p4, size=l3.shape[-2:], mode="nearest"))
        n3 = p3
        n4 = self.bottom_up[0](p4 + self.down[0](n3))
        n5 = self.bottom_up[1](p5 + self.down[1](n4))
        outs = []
        for i, p in enumerate((n3, n4, n5)):
            s = self.stems[i](p)
            out = torch.cat([self.reg_out[i](self.reg_convs[i](s)), self.cls_out[i](self.cls_convs[i](s))], 1)
            outs.append(out.flatten(2).transpose(1, 2))
        return torch.cat(outs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(self.features(x))

    def grid(self, size: tuple[int, int], device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell centres (N, 2) in pixels and each cell's stride (N,), in the order of the predictions."""
        points, strides = [], []
        for s in self.strides:
            h, w = -(-size[0] // s), -(-size[1] // s)
            ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
            points.append((torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * s)
            strides.append(torch.full((h * w,), float(s), device=device))
        return torch.cat(points), torch.cat(strides)

    def decode(self, raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Boxes (B, N, 4) xyxy in input pixels from the raw outputs."""
        points, strides = self.grid(size, raw.device)
        r, s = self.config.offset_range, strides[:, None]
        centre = points + (2 * r * torch.sigmoid(raw[..., :2]) - r) * s
        wh = torch.exp(raw[..., 2:4].clamp(max=6.0)) * self.config.anchor * s
        return box_convert(torch.cat([centre, wh], -1), "cxcywh", "xyxy")

    # ------------------------------------------------------------------ training

    def assign(self, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """For one image's ground truth (G, 4) xyxy: the index of the box each cell learns, -1 for none."""
        points, strides = self.grid(size, boxes.device)
        if len(boxes) == 0:
            return torch.full((len(points),), -1, dtype=torch.long, device=boxes.device)
        wh = boxes[:, 2:] - boxes[:, :2]
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        level = torch.bucketize(wh.max(1).values, torch.tensor(self.config.level_limits, device=boxes.device))
        box_stride = torch.tensor(self.strides, device=boxes.device, dtype=torch.float)[level]
        near = ((points[:, None] - centre[None]).abs() < self.config.radius * strides[:, None, None]).all(-1)
        ok = near & (strides[:, None] == box_stride[None])  # (N, G)
        area = (wh[:, 0] * wh[:, 1])[None].expand_as(ok)
        area = torch.where(ok, area, torch.full_like(area, float("inf")))
        best = area.argmin(1)
        return torch.where(ok.any(1), best, torch.full_like(best, -1))

    def loss(self, raw: torch.Tensor, targets: list[dict[str, torch.Tensor]], size: tuple[int, int],
             box_weight: float = 5.0) -> dict[str, torch.Tensor]:
        """YOLOX-style losses; ``targets``: per image {"boxes": (G, 4) xyxy pixels, "labels": (G,)}."""
        pred_boxes = self.decode(raw, size)
        obj_target = torch.zeros(raw.shape[:2], device=raw.device)
        pos_boxes, pos_targets, pos_cls, cls_targets = [], [], [], []
        for b, t in enumerate(targets):
            idx = self.assign(t["boxes"], size)
            pos = idx >= 0
            if pos.any():
                obj_target[b, pos] = 1.0
                pos_boxes.append(pred_boxes[b, pos])
                pos_targets.append(t["boxes"][idx[pos]])
                pos_cls.append(raw[b, pos, 5:])
                cls_targets.append(F.one_hot(t["labels"][idx[pos]], self.config.num_classes).float())
        n_pos = max(1, int(obj_target.sum()))
        obj = F.binary_cross_entropy_with_logits(raw[..., 4], obj_target, reduction="sum") / n_pos
        if pos_boxes:
            box = complete_box_iou_loss(torch.cat(pos_boxes), torch.cat(pos_targets), reduction="sum") / n_pos
            cls = F.binary_cross_entropy_with_logits(torch.cat(pos_cls), torch.cat(cls_targets),
                                                     reduction="sum") / n_pos
        else:
            box = cls = raw.sum() * 0.0
        return {"loss": box_weight * box + obj + cls, "box": box.detach(), "obj": obj.detach(), "cls": cls.detach()}

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def postprocess(self, raw: torch.Tensor, size: tuple[int, int], score_threshold: float | None = None,
                    nms_iou: float | None = None, max_detections: int | None = None) -> list[dict[str, torch.Tensor]]:
        """Per image {"boxes" (K, 4) xyxy input pixels, "scores" (K,), "labels" (K,)} after NMS."""
        score_threshold = self.config.score_threshold if score_threshold is None else score_threshold
        nms_iou = self.config.nms_iou if nms_iou is None else nms_iou
        max_detections = max_detections or self.config.max_detections
        raw = raw.float()  # bf16 (autocast) scores tie often, which would make the mAP depend on sort order
        boxes_all = self.decode(raw, size)
        scores_all = torch.sigmoid(raw[..., 4:5]) * torch.sigmoid(raw[..., 5:])
        results = []
        for boxes, scores in zip(boxes_all, scores_all):
            score, label = scores.max(1)
            keep = score > score_threshold
            boxes, score, label = boxes[keep], score[keep], label[keep]
            if len(score) > 10 * max_detections:  # NMS cost grows with the candidates: keep the best
                top = score.topk(10 * max_detections).indices
                boxes, score, label = boxes[top], score[top], label[top]
            keep = batched_nms(boxes, score, label, nms_iou)[:max_detections]
            results.append({"boxes": boxes[keep], "scores": score[keep], "labels": label[keep]})
        return results


def valid_size(size: int) -> bool:
    """The input sizes the detector takes: multiples of its largest stride (32), at least 64."""
    return isinstance(size, int) and not isinstance(size, bool) and size >= 64 and size % 32 == 0


def check_size(size: int) -> None:
    if not valid_size(size):
        raise ValueError(f"input size {size!r}: use a multiple of 32, at least 64")


def letterbox_scales(original: tuple[int, int], resized: tuple[int, int]) -> tuple[float, float]:
    """(x, y) factors from an (H, W) image to its letterboxed (nh, nw) size."""
    return resized[1] / original[1], resized[0] / original[0]


def letterbox(image: torch.Tensor, size: int, fill: float = 0.5) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """Resize a (3, H, W) float image so its longer side is ``size`` and pad it to ``size`` x ``size``
    (top-left aligned). Returns the square image, the scale and the (H, W) it was resized to."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = F.interpolate(image[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    out = torch.full((image.shape[0], size, size), fill, dtype=image.dtype)
    out[:, :nh, :nw] = resized
    return out, scale, (nh, nw)


def to_image_boxes(boxes: torch.Tensor, scale: float | tuple[float, float], height: int, width: int) -> torch.Tensor:
    """Letterboxed (x1, y1, x2, y2) boxes back in the original image's pixels, clipped to its borders.
    ``scale``: one factor, or (x, y) factors (``letterbox_scales``: each side of the resize is rounded)."""
    sx, sy = scale if isinstance(scale, tuple) else (scale, scale)
    boxes = boxes / torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype, device=boxes.device)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return boxes


@torch.no_grad()
def detect(model: YOLO, image: torch.Tensor, score_threshold: float | None = None, nms_iou: float | None = None,
           size: int | None = None) -> dict[str, torch.Tensor]:
    """Detections for one (3, H, W) float image in [0, 1], boxes in that image's pixel coordinates."""
    size = model.config.image_size if size is None else size
    check_size(size)
    x, _, resized = letterbox(image, size)
    raw = model(x[None])
    det = model.postprocess(raw, (size, size), score_threshold, nms_iou)[0]
    scales = letterbox_scales(tuple(image.shape[-2:]), resized)
    return {**det, "boxes": to_image_boxes(det["boxes"], scales, *image.shape[-2:])}


def detect_photo(model: YOLO, image: Image.Image, score_threshold: float | None = None, nms_iou: float | None = None,
                 work_size: int = 1024) -> list[tuple[str, float, list[float]]]:
    """(class, score, [x1, y1, x2, y2] in ``image`` pixels) for every detection in an RGB PIL photo, best first.
    The photo is shrunk to at most ``work_size`` pixels a side first: the model sees far fewer anyway
    (``config.image_size``), and a huge upload then costs no more than a 1024 px one."""
    work = image.copy()
    work.thumbnail((work_size, work_size), Image.BILINEAR)
    # per axis: thumbnail rounds each side, so a very long thin photo's two ratios differ
    ratio = torch.tensor([image.width / work.width, image.height / work.height]).repeat(2)
    x = torch.from_numpy(np.asarray(work, dtype=np.float32) / 255).permute(2, 0, 1)
    det = detect(model, x, score_threshold, nms_iou)
    return [(model.classes[int(c)], float(s), (b.float() * ratio).tolist())
            for b, s, c in zip(det["boxes"], det["scores"], det["labels"])]
