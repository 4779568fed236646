"""Text generation speed on the CPU: tokens/s with and without the KV cache, and training tokens/s.

    python -m bench.textgen [--repeats 3] [--threads 2]

Uses the shipped GPT (weights/gpt-shakespeare) when present, else a randomly initialized model of the
same default size; both paths are measured in the same run, so the ratio is the figure to quote.
"""
from __future__ import annotations

import argparse
from typing import Any

import torch

import weights
from bench.common import timeit
from models.gpt import GPT, GPTConfig

TAB = "Text generation"


def load_gpt() -> tuple[GPT, str]:
    try:
        return weights.load("gpt-shakespeare"), "shipped gpt-shakespeare"
    except weights.WeightsError:
        vocab = "\n !$&',-.3:;?" + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        return GPT(GPTConfig(vocab=vocab, block_size=128, n_layer=4, n_head=4, n_embd=192)).eval(), "random init"


def run(repeats: int = 3, threads: int = 2) -> list[dict[str, Any]]:
    """Rows {tab, case, median_ms, p90_ms, note}: generation with / without the KV cache, a training step."""
    torch.set_num_threads(threads)
    model, source = load_gpt()
    cfg = model.config
    prompt = model.tokenizer.encode("ROMEO:\n")
    note = (f"GPT ({source}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, context "
            f"{cfg.block_size}), {threads} thread(s)")
    rows = []
    for n in (256, 1024):
        for use_cache in (True, False):
            def call() -> None:
                list(model.generate(prompt, n, 1.0, generator=torch.Generator().manual_seed(0),
                                    use_cache=use_cache))
            t = timeit(call, repeats)
            rows.append({"tab": TAB, "case": f"generate {n} characters, {'KV cache' if use_cache else 'recompute'}",
                         **t, "tokens": n, "note": f"{n / (t['median_ms'] / 1000):.0f} tok/s; {note}"})
    trainer = GPT(GPTConfig(**{**cfg.__dict__})).train()
    opt = torch.optim.AdamW(trainer.parameters(), 1e-3)
    x = torch.randint(0, cfg.vocab_size, (32, cfg.block_size))

    def step() -> None:
        loss = trainer.loss(x, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    t = timeit(step, max(3, repeats), warmup=2)
    rows.append({"tab": TAB, "case": f"training step (batch 32 x {cfg.block_size}, fp32)", **t,
                 "tokens": x.numel(), "note": f"{x.numel() / (t['median_ms'] / 1000):.0f} tok/s; {note}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = run(args.repeats, args.threads)
    print(f"{rows[0]['note'].split('; ', 1)[1]}; torch {torch.__version__}, median of {args.repeats}")
    rate = {r["case"]: r["tokens"] / (r["median_ms"] / 1000) for r in rows}
    for n in (256, 1024):
        cached, recompute = rate[f"generate {n} characters, KV cache"], rate[f"generate {n} characters, recompute"]
        print(f"generate {n:5d} tokens: KV cache {cached:8.0f} tok/s | recompute {recompute:8.0f} tok/s"
              f" | speed-up x{cached / recompute:.2f}")
    print(f"{rows[-1]['case']}: {rate[rows[-1]['case']]:8.0f} tok/s")


if __name__ == "__main__":
    main()
