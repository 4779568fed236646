"""Tiny models and data the tests share: a PyTorchModelHubMixin model and a toy regression task."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.utils.data import TensorDataset


@dataclass
class TinyConfig:
    n_in: int = 4
    n_hidden: int = 8
    n_out: int = 1


class TinyNet(nn.Module, PyTorchModelHubMixin):
    """The registry's model contract in miniature: one dataclass config, rebuilt by from_pretrained."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config if isinstance(config, TinyConfig) else TinyConfig(**config)
        c = self.config
        self.net = nn.Sequential(nn.Linear(c.n_in, c.n_hidden), nn.Tanh(), nn.Linear(c.n_hidden, c.n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_spec(name: str = "tiny"):
    """A registry entry for TinyNet (the tests swap it into ``weights.MODELS``)."""
    import weights
    return weights.ModelSpec(name, "toys:TinyNet", "toy", "--tiny", "A tiny test model")


def regression_data(n: int = 256, n_in: int = 4, seed: int = 0, noise: float = 0.01) -> TensorDataset:
    """y = x @ w + 0.5 + noise: a linear model can reach a loss of about noise**2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=g)
    w = torch.arange(1, n_in + 1, dtype=torch.float32) / n_in
    y = x @ w + 0.5 + noise * torch.randn(n, generator=g)
    return TensorDataset(x, y[:, None])


def mse_loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x).float(), y)


def full_mse(data: TensorDataset):
    """An ``evaluate`` callback: the MSE over a whole dataset as ``val_loss``."""
    x, y = data.tensors

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"val_loss": nn.functional.mse_loss(model(x).float(), y).item()}
    return evaluate


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}

