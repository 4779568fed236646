"""CIFAR-10 classifiers: ResNet-18/34, a fast compact conv net (airbench-style), a Vision Transformer.

Every model takes RGB images as floats in [0, 1], shape (B, 3, 32, 32), normalizes them with the mean/std
stored in its config and returns logits (B, num_classes). Test-time augmentation (``tta_logits``) and
explanations live here too: ``grad_cam`` for the conv nets and ``attention_rollout`` for the ViT (pure tensor
code, no I/O).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR10_STD = [0.2470, 0.2435, 0.2616]


class _Classifier(nn.Module):
    """Shared bits: input normalization from the config, class names, the layer Grad-CAM looks at."""

    def _init_norm(self, mean: list[float], std: list[float]) -> None:
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    @property
    def classes(self) -> list[str]:
        return list(self.config.classes)


# --------------------------------------------------------------------------- ResNet

@dataclass
class ResNetConfig:
    depth: int = 18                   # 18 or 34 (basic blocks)
    width: int = 64                   # channels of the first stage; doubled at each of the 4 stages
    num_classes: int = 10
    classes: list[str] = field(default_factory=lambda: list(CIFAR10_CLASSES))
    mean: list[float] = field(default_factory=lambda: list(CIFAR10_MEAN))
    std: list[float] = field(default_factory=lambda: list(CIFAR10_STD))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(_Classifier, PyTorchModelHubMixin):
    """ResNet for 32x32 inputs (3x3 stem, no max-pool), as in kuangliu/pytorch-cifar."""

    BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

    def __init__(self, config: ResNetConfig):
        super().__init__()
        if isinstance(config, dict):
            config = ResNetConfig(**config)
        if config.depth not in self.BLOCKS:
            raise ValueError(f"depth must be one of {sorted(self.BLOCKS)}, got {config.depth}")
        self.config = config
        self._init_norm(config.mean, config.std)
        w = config.width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        layers, c_in = [], w
        for i, n in enumerate(self.BLOCKS[config.depth]):
            c_out = w * 2 ** i
            for j in range(n):
                layers.append(BasicBlock(c_in, c_out, 2 if (j == 0 and i > 0) else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, config.num_classes)
        for m in self.modules():  # He init for convs; BN starts as identity
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # zero-init the last BN of each residual branch (Goyal et al. 2017)
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    @property
    def cam_layer(self) -> nn.Module:
        return self.layers[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(self.normalize(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --------------------------------------------------------------------------- compact net

@dataclass
class CompactNetConfig:
    widths: list[int] = field(default_factory=lambda: [64, 256, 256])  # the three conv blocks
    whiten_kernel: int = 2           # patch size of the whitening conv (its width is 2 * 3 * k * k)
    scaling: float = 1 / 9           # logits multiplier (airbench's output temperature)
    bn_momentum: float = 0.6         # PyTorch convention: weight of the new batch statistics is 1 - 0.6
    num_classes: int = 10
    classes: list[str] = field(default_factory=lambda: list(CIFAR10_CLASSES))
    mean: list[float] = field(default_factory=lambda: list(CIFAR10_MEAN))
    std: list[float] = field(default_factory=lambda: list(CIFAR10_STD))


class ConvBlock(nn.Module):
    """conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU (the airbench block)."""

    def __init__(self, c_in: int, c_out: int, bn_momentum: float):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(c_out, eps=1e-12, momentum=1 - bn_momentum)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(c_out, eps=1e-12, momentum=1 - bn_momentum)
        for norm in (self.norm1, self.norm2):  # scale-free BN: only the shift is learned
            norm.weight.requires_grad_(False)
        for conv in (self.conv1, self.conv2):  # identity-initialized on the first c_in filters
            nn.init.dirac_(conv.weight.data[:conv.weight.size(1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class CompactTrunk(nn.Module):
    """CompactNet's conv stack without its pooling and head: the whitening conv and the ConvBlocks (each
    halves the resolution). The detector and the captioner use it as their backbone; the parameter names
    match CompactNet's, so a trained CompactNet's state dict loads into it directly."""

    def __init__(self, widths: list[int], whiten_kernel: int, bn_momentum: float = 0.6,
                 pad_to_stride: bool = False):
        super().__init__()
        c = 2 * 3 * whiten_kernel ** 2
        self.whiten = nn.Conv2d(3, c, whiten_kernel, padding=0, bias=True)
        blocks = []
        for w in widths:
            blocks.append(ConvBlock(c, w, bn_momentum))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.channels = c
        self.pad_to_stride = pad_to_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_to_stride:  # keep H, W divisible by the stride (the whitening conv is unpadded)
            k = self.whiten.kernel_size[0]
            x = F.pad(x, (0, k - 1, 0, k - 1))
        return self.blocks(F.gelu(self.whiten(x)))


class CompactNet(_Classifier, PyTorchModelHubMixin):
    """airbench94's network (Jordan, 2024): a frozen patch-whitening conv, three wide conv blocks, a
    linear head. Few layers and large channel counts make it fast to train, on a GPU or a CPU."""

    def __init__(self, config: CompactNetConfig):
        super().__init__()
        if isinstance(config, dict):
            config = CompactNetConfig(**config)
        self.config = config
        self._init_norm(config.mean, config.std)
        k = config.whiten_kernel
        self.whiten = nn.Conv2d(3, 2 * 3 * k * k, k, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # set once from data by init_whitening
        c, blocks = 2 * 3 * k * k, []
        for w in config.widths:
            blocks.append(ConvBlock(c, w, config.bn_momentum))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, config.num_classes, bias=False)

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the first conv to the ZCA-like whitening of k x k patches of ``images`` (floats in [0,1]):
        filters are the patch covariance's eigenvectors scaled by 1/sqrt(eigenvalue), and their negatives."""
        k = self.config.whiten_kernel
        x = self.normalize(images.float())
        patches = x.unfold(2, k, 1).unfold(3, k, 1).transpose(1, 3).reshape(-1, 3, k, k).flatten(1)
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.view(-1, 1) + eps)).reshape(-1, 3, k, k)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))

    @property
    def cam_layer(self) -> nn.Module:
        return self.blocks[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.gelu(self.whiten(self.normalize(x))))
        x = torch.amax(x, dim=(2, 3))  # global max-pool (airbench pools 3x3 -> 1x1)
        return self.head(x) * self.config.scaling


# --------------------------------------------------------------------------- ViT

@dataclass
class ViTConfig:
    image_size: int = 32
    patch_size: int = 4
    dim: int = 384
    depth: int = 7
    heads: int = 12
    mlp_ratio: float = 3.0
    dropout: float = 0.0
    num_classes: int = 10
    classes: list[str] = field(default_factory=lambda: list(CIFAR10_CLASSES))
    mean: list[float] = field(default_factory=lambda: list(CIFAR10_MEAN))
    std: list[float] = field(default_factory=lambda: list(CIFAR10_STD))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.last_attention: torch.Tensor | None = None  # (B, heads, T, T), kept when record=True
        self.record = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.record:  # explicit softmax so the attention map can be read back
            att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
            att = att.softmax(-1)
            self.last_attention = att.detach()
            y = att @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ViT(_Classifier, PyTorchModelHubMixin):
    """Vision Transformer: 4x4 patches, a class token, learned positions, pre-norm blocks."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        if isinstance(config, dict):
            config = ViTConfig(**config)
        if config.image_size % config.patch_size or config.dim % config.heads:
            raise ValueError("image_size must divide by patch_size and dim by heads")
        self.config = config
        self._init_norm(config.mean, config.std)
        n = (config.image_size // config.patch_size) ** 2
        self.patch = nn.Conv2d(3, config.dim, config.patch_size, config.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos = nn.Parameter(torch.randn(1, n + 1, config.dim) * 0.02)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.Sequential(*[Block(config.dim, config.heads, config.mlp_ratio, config.dropout)
                                      for _ in range(config.depth)])
        self.ln = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def grid(self) -> int:
        return self.config.image_size // self.config.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(self.normalize(x)).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(self.drop(x + self.pos))
        return self.head(self.ln(x[:, 0]))


# --------------------------------------------------------------------------- test-time augmentation

TTA_LEVELS = {0: "none", 1: "horizontal flip", 2: "flip + 1-pixel translations",
              3: "mean over every shift by at most 1 pixel and its mirror, 18 views"}


def tta_logits(model: nn.Module, x: torch.Tensor, level: int = 0) -> torch.Tensor:
    """Logits of float images ``x`` (B, 3, H, W) averaged over test-time views. Level 0: plain; 1: with the mirror
    image; 2: half weight on those two, half on the two diagonal 1-pixel shifts and their mirrors (airbench's);
    3: the plain mean of all 18 views, every shift by at most one pixel and its mirror (a ViT's patch grid falls
    differently on each shift, so it gains more from them than a conv net)."""
    if level not in TTA_LEVELS:
        raise ValueError(f"test-time augmentation level must be one of {list(TTA_LEVELS)}, got {level!r}")
    size = x.shape[-1]
    padded = F.pad(x, (1,) * 4, mode="reflect") if level >= 2 else None
    if level == 3:
        views = [padded[..., dy:dy + size, dx:dx + size] for dy in range(3) for dx in range(3)]
        return sum(model(v).float() + model(v.flip(3)).float() for v in views) / 18
    logits = model(x).float()
    if level >= 1:
        logits = 0.5 * logits + 0.5 * model(x.flip(3)).float()
    if level == 2:
        shifted = [padded[..., :size, :size], padded[..., 2:, 2:]]
        shifted = sum(0.5 * model(v).float() + 0.5 * model(v.flip(3)).float() for v in shifted) / 2
        logits = 0.5 * logits + 0.5 * shifted
    return logits


# --------------------------------------------------------------------------- explanations

def grad_cam(model: nn.Module, x: torch.Tensor, target: int | None = None,
             layer: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM (Selvaraju et al., 2017) of one image: ((H, W) heat map in [0, 1], logits (num_classes,)).

    The map is the ReLU of the channel-weighted activations of ``layer`` (default ``model.cam_layer``),
    weighted by the spatially averaged gradient of the target logit (default: the top class), upsampled
    to the input size.
    """
    layer = layer or model.cam_layer
    store: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        store["act"] = output

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x.detach().float())
            target = int(logits[0].argmax()) if target is None else target
            # gradient w.r.t. the activation only: parameters' .grad stay untouched (the model is shared)
            (grad,) = torch.autograd.grad(logits[0, target], store["act"])
    finally:
        handle.remove()
    act, grad = store["act"].detach()[0].float(), grad[0].float()
    cam = F.relu((grad.mean((1, 2), keepdim=True) * act).sum(0))
    cam = F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    cam = cam / cam.max() if cam.max() > 0 else cam
    return cam, logits.detach()[0]


def attention_rollout(model: ViT, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention rollout (Abnar & Zuidema, 2020) of one image: ((H, W) map in [0, 1], logits).

    Head-averaged attention plus the residual identity, renormalized and multiplied through the layers;
    the class token's row over the patches is the map."""
    attns = [b.attn for b in model.blocks]
    for a in attns:
        a.record = True
    try:
        with torch.no_grad():
            logits = model(x.float())
    finally:
        for a in attns:
            a.record = False
    rollout = None
    for a in attns:
        att = a.last_attention[0].float().mean(0)
        att = att + torch.eye(len(att))
        att = att / att.sum(-1, keepdim=True)
        rollout = att if rollout is None else att @ rollout
        a.last_attention = None
    g = model.grid
    cam = rollout[0, 1:].reshape(1, 1, g, g)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    cam = cam / cam.max() if cam.max() > 0 else cam
    return cam, logits[0]


def explain(model: nn.Module, x: torch.Tensor, target: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The explanation that fits the model: attention rollout for a ViT (class-agnostic), Grad-CAM of
    ``target`` (default: the top class of ``x``) otherwise."""
    return attention_rollout(model, x) if isinstance(model, ViT) else grad_cam(model, x, target)
