"""The evaluation classifier for generated images: a small CNN, trained here once per dataset.

It judges samples of the generative models (class consistency, confidence) and supplies the features
for the Frechet distance. Input: float images in [-1, 1], (B, 1 or 3, 28 or 32, 32 or 28); a gray
model averages RGB input, an RGB model repeats gray input; any size works (adaptive average pooling to a fixed grid).
"""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn


@dataclass
class EvalNetConfig:
    in_channels: int = 1
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    pool: int = 1                     # the last feature map is average-pooled to pool x pool, then flattened
    feature_dim: int = 128            # the penultimate features (Frechet distance space)
    num_classes: int = 10
    classes: list[str] = field(default_factory=list)
    dataset: str = "fashion"


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class EvalNet(nn.Module, PyTorchModelHubMixin):
    """conv stages (each: 3x3 conv-BN-ReLU, the first stage once, later ones twice, 2x2 max-pool between),
    adaptive average pool to pool x pool, a ReLU feature layer, a linear classifier."""

    def __init__(self, config: EvalNetConfig):
        super().__init__()
        if isinstance(config, dict):
            config = EvalNetConfig(**config)
        self.config = config
        layers: list[nn.Module] = []
        c = config.in_channels
        for i, w in enumerate(config.widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers.append(_block(c, w))
            if i:
                layers.append(_block(w, w))
            c = w
        self.body = nn.Sequential(*layers)
        self.feature = nn.Sequential(nn.Flatten(), nn.Linear(c * config.pool ** 2, config.feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.shape[1] != self.config.in_channels:
            x = x.mean(1, keepdim=True) if self.config.in_channels == 1 else x.expand(-1, self.config.in_channels, -1, -1)
        return x.float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim) of images in [-1, 1]."""
        h = self.body(self._prepare(x))
        return self.feature(F.adaptive_avg_pool2d(h, self.config.pool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))
