"""Diffusion sampling speed on the CPU: DDIM-50 and DDPM-1000, one image and a batch of 16.

    python -m bench.diffusion [--repeats 3] [--threads 2]

Uses the shipped ddpm-fashion when present, else a randomly initialized U-Net of the same recipe (speed
does not depend on the weights). Guided sampling runs the conditional and the null class in one doubled
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


def load_unet() -> tuple[UNet, str]:
    try:
        return weights.load("ddpm-fashion"), "shipped ddpm-fashion"
    except weights.WeightsError:
        from training.diffusion import RECIPES
        return UNet(UNetConfig(**RECIPES["fashion"].model)).eval(), "random init"


def run(repeats: int = 3, threads: int = 2) -> list[dict[str, Any]]:
    """Rows {tab, case, median_ms, p90_ms, note}: DDIM-50 / DDPM-1000 x batch 1 / 16, and unguided DDIM-50."""
    torch.set_num_threads(threads)
    model, source = load_unet()
    cfg = model.config
    note = (f"U-Net ({source}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
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
        rows.append({"tab": TAB, "case": f"{kind.upper()}-{steps}, batch {batch}, "
                                         f"{'guidance ' + format(guidance, 'g') if guidance != 1 else 'no guidance'}",
                     **t, "note": f"{per_image / 1000:.2f} s per image{' (1 run)' if slow else ''}; {note}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = run(args.repeats, args.threads)
    print(f"{rows[0]['note'].split('; ', 1)[1]}; torch {torch.__version__}, median of {args.repeats}")
    for r in rows:
        print(f"{r['case']:40s} {r['median_ms'] / 1000:8.2f} s   ({r['note'].split(';')[0]})")


if __name__ == "__main__":
    main()
