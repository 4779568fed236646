"""A class-conditional U-Net that predicts the noise in x_t (DDPM, Ho et al. 2020), for classifier-free
guidance (Ho & Salimans 2022): class index ``num_classes`` is the learned "null" class.

Layout: sinusoidal time embedding -> MLP; class embedding added to it; residual blocks (GroupNorm, SiLU,
conv, the embedding added between the two convs); strided-conv downsampling and nearest + conv
upsampling with skip connections; self-attention at the resolutions listed in ``attn_resolutions``.
The noise schedule and samplers live in ``models.schedulers``; the config records which schedule the
model was trained with.
"""
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn


@dataclass
class UNetConfig:
    image_size: int = 28
    in_channels: int = 1
    patch_size: int = 1               # >1: space-to-depth stem (pixel unshuffle), the U-Net runs at size/patch
    base_channels: int = 32
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2])  # one level each; downsample between
    num_res_blocks: int = 1           # per level on the way down (one more on the way up, as in DDPM)
    attn_resolutions: list[int] = field(default_factory=lambda: [7])
    attn_heads: int = 4
    dropout: float = 0.1
    num_classes: int = 10
    classes: list[str] = field(default_factory=list)
    # the diffusion process the weights were trained for (read by models.schedulers.from_config)
    num_train_timesteps: int = 1000
    beta_schedule: str = "cosine"     # cosine | linear
    prediction_type: str = "epsilon"  # epsilon | v_prediction (v = sqrt(abar) eps - sqrt(1 - abar) x_0)
    default_guidance: float = 3.0


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) integer or float timesteps -> (B, dim), as in the Transformer."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(c, 32) if c >= 32 else max(1, math.gcd(c, c // 4)), c)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual."""

    def __init__(self, c: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm, self.qkv, self.out = _norm(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)  # (b, heads, hw, c/heads)
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module, PyTorchModelHubMixin):
    """eps_theta(x_t, t, y): (B,C,H,W) noisy images, (B,) timesteps, (B,) class indices (``num_classes`` =
    null / unconditional, also used when ``y`` is None) -> (B,C,H,W) predicted noise."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        if isinstance(config, dict):
            config = UNetConfig(**config)
        self.config = config
        ch = config.base_channels
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(config.num_classes + 1, emb_dim)
        pixels = config.in_channels * config.patch_size ** 2
        self.stem = nn.Conv2d(pixels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skips, c, res = [ch], ch, config.image_size // config.patch_size
        for level, mult in enumerate(config.channel_mults):
            for _ in range(config.num_res_blocks):
                self.down.append(self._stage(c, ch * mult, emb_dim, res))
                c = ch * mult
                skips.append(c)
            if level < len(config.channel_mults) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                res = (res + 1) // 2
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, emb_dim, config.dropout), Attention(c, config.attn_heads),
                                  ResBlock(c, c, emb_dim, config.dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mults))):
            for _ in range(config.num_res_blocks + 1):
                self.up.append(self._stage(c + skips.pop(), ch * mult, emb_dim, res))
                c = ch * mult
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)))
                res *= 2
        self.head = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, pixels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def _stage(self, c_in: int, c_out: int, emb_dim: int, res: int) -> nn.ModuleList:
        parts = [ResBlock(c_in, c_out, emb_dim, self.config.dropout)]
        if res in self.config.attn_resolutions:
            parts.append(Attention(c_out, self.config.attn_heads))
        return nn.ModuleList(parts)

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(len(x))
        if y is None:
            y = torch.full((len(x),), self.null_class, dtype=torch.long, device=x.device)
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels)) + self.class_emb(y)
        p = self.config.patch_size
        h = self.stem(F.pixel_unshuffle(x, p) if p > 1 else x)
        hs = [h]
        for layer in self.down:
            h = self._run(layer, h, emb)
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                skip = hs.pop()
                if skip.shape[-1] != h.shape[-1]:  # odd sizes (7 -> 4 -> 8): crop the upsampled map
                    h = h[..., :skip.shape[-2], :skip.shape[-1]]
                h = self._run(layer, torch.cat([h, skip], 1), emb)
            else:
                h = layer(h)
        h = self.head(h)
        return F.pixel_shuffle(h, p) if p > 1 else h

    @staticmethod
    def _run(layer: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, nn.ModuleList):
            h = layer[0](h, emb)
            for extra in layer[1:]:
                h = extra(h)
            return h
        return layer(h)
