"""Captioning speed on the CPU: per-image latency (encode + decode) at beam sizes 1, 3 and 5, and the
encoder alone; target < 500 ms per image with beam 3.

    python -m bench.caption [--repeats 10] [--threads 1]

Uses the shipped captioner (weights/captioner-flickr8k) when present, else a randomly initialized model of
the same size decoding a fixed 12-word caption (a random model's captions have arbitrary lengths).
"""
from __future__ import annotations

import argparse
from typing import Any

import torch

import weights
from bench.common import timeit
from models.caption import CaptionConfig, Captioner

TAB = "Captioning"
TARGET_MS = 500.0


def load() -> tuple[Captioner, bool]:
    try:
        return weights.load("captioner-flickr8k"), True
    except weights.WeightsError:
        torch.manual_seed(0)
        return Captioner(CaptionConfig(vocab=["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(2500)],
                                       image_size=96, layers=2)).eval(), False


def run(repeats: int = 10, threads: int = 1) -> list[dict[str, Any]]:
    """Rows {tab, case, median_ms, p90_ms, note}: encoder only, and image -> caption at beam 1 / 3 / 5."""
    torch.set_num_threads(threads)
    model, shipped = load()
    from demos.caption import example_paths, prepare
    paths = example_paths()
    x = prepare(paths[0], model.config.image_size)[1] if paths else torch.rand(1, 3, 96, 96)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    note = (f"{'shipped weights' if shipped else 'random init'}, {n_params:.2f}M parameters, "
            f"{model.config.image_size}px input, {threads} thread(s)")
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        t = timeit(lambda: model.features(x), repeats)
        rows.append({"tab": TAB, "case": "encoder only (1 image)", **t, "note": note})
        for beam in (1, 3, 5):
            out: dict[str, Any] = {}

            def call() -> None:
                hyps = model.beam(model.features(x), beam, max_len=None if shipped else 14)
                out["words"] = len(hyps[0].tokens)
            t = timeit(call, repeats)
            verdict = f"; target < {TARGET_MS:.0f} ms: {'met' if t['median_ms'] < TARGET_MS else 'missed'}" \
                if beam == 3 else ""
            rows.append({"tab": TAB, "case": f"image -> caption, beam {beam}", **t,
                         "note": f"{out['words']}-word caption; {note}{verdict}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rows = run(args.repeats, args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} (ms)")
    print(f"{'case':32s} {'median ms':>10s} {'p90 ms':>8s}")
    for r in rows:
        print(f"{r['case']:32s} {r['median_ms']:10.1f} {r['p90_ms']:8.1f}")
    beam3 = next(r for r in rows if r["case"].endswith("beam 3"))
    greedy = next(r for r in rows if r["case"].endswith("beam 1"))
    print(f"beam 3 / greedy: {beam3['median_ms'] / greedy['median_ms']:.2f}x; beam 3 vs the {TARGET_MS:.0f} ms "
          f"target: {beam3['median_ms'] / TARGET_MS:.2f}x ({beam3['note']})")


if __name__ == "__main__":
    main()
