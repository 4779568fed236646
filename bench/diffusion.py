"""Diffusion sampling speed on the CPU: DDIM-50 and DDPM-1000, one image and a batch of 16.

    python -m bench.diffusion [--repeats 3] [--threads 2]

Times each shipped model (ddpm-fashion, ddpm-cifar10); without ddpm-fashion's weights, a randomly
initialized U-Net of its recipe stands in (speed does not depend on the weights). Guided sampling runs the conditional and the null class in one doubled
batch; DDIM-50 without guidance (one half of that batch) is measured in the same run as the baseline.
"""
from __future__ import annotations

import argparse
from typing import Any

import torch

import weights
from bench.common import timeit
from models.diffusion import UNet, UNetConfig
from models.schedulers import make_scheduler, sample

TAB = "Diffusion"


def load_unets() -> list[tuple[UNet, str, str]]:
    """(model, name, source) for each shipped U-Net."""
    models = [(weights.load(name), name, "shipped") for name in ("ddpm-fashion", "ddpm-cifar10")
              if weights.available(name)]
    if not models:
        from training.diffusion import RECIPES
        models = [(UNet(UNetConfig(**RECIPES["fashion"].model)).eval(), "ddpm-fashion", "random init")]
    return models


def run(repeats: int = 3, threads: int = 2) -> list[dict[str, Any]]:
    """Rows {tab, case, median_ms, p90_ms, note} per model: DDIM-50 / DDPM-1000 x batch 1 / 16, and unguided
    DDIM-50."""
    torch.set_num_threads(threads)
    return [row for model, name, source in load_unets()
            for row in _run_model(model, name, source, repeats, threads)]


def _run_model(model: UNet, name: str, source: str, repeats: int, threads: int) -> list[dict[str, Any]]:
    cfg = model.config
    note = (f"U-Net ({source} {name}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
            f"{cfg.image_size}x{cfg.image_size}), {threads} thread(s)")
    w = cfg.default_guidance
    rows = []
    cases = [("ddim", 50, 1, w), ("ddim", 50, 16, w), ("ddim", 50, 16, 1.0), ("ddpm", 1000, 1, w),
             ("ddpm", 1000, 16, w)]
    for kind, steps, batch, guidance in cases:
        scheduler = make_scheduler(kind, cfg, steps)
        labels = torch.arange(batch) % cfg.num_classes

        def call() -> None:
            sample(model, scheduler, labels, shape=(batch, cfg.in_channels, cfg.image_size, cfg.image_size),
                   guidance=guidance, generator=torch.Generator().manual_seed(0))
        slow = kind == "ddpm" and batch > 1
        t = timeit(call, 1 if slow else repeats, warmup=0 if kind == "ddpm" else 1)
        per_image = t["median_ms"] / batch
        rows.append({"tab": TAB, "case": f"{name}: {kind.upper()}-{steps}, batch {batch}, "
                                         f"{'guidance ' + format(guidance, 'g') if guidance != 1 else 'no guidance'}",
                     **t, "note": f"{per_image / 1000:.2f} s per image{' (1 run)' if slow else ''}; {note}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = run(args.repeats, args.threads)
    print(f"torch {torch.__version__}, median of {args.repeats}")
    for r in rows:
        print(f"{r['case']:55s} {r['median_ms'] / 1000:8.2f} s   ({r['note'].split(';')[0]})")


if __name__ == "__main__":
    main()
