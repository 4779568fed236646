"""Text generation speed on the CPU: tokens/s with and without the KV cache, and training tokens/s.

    python -m bench.textgen [--repeats 3] [--threads 2]

Uses the shipped GPT (weights/gpt-shakespeare) when present, else a randomly initialized model of the
same default size; both paths are measured in the same run, so the ratio is the figure to quote.
"""
from __future__ import annotations

import argparse

import torch

import weights
from bench.common import timeit
from models.gpt import GPT, GPTConfig


def load_gpt() -> tuple[GPT, str]:
    try:
        return weights.load("gpt-shakespeare"), "shipped gpt-shakespeare"
    except weights.WeightsError:
        vocab = "\n !$&',-.3:;?" + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        return GPT(GPTConfig(vocab=vocab, block_size=128, n_layer=4, n_head=4, n_embd=192)).eval(), "random init"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, source = load_gpt()
    cfg = model.config
    prompt = model.tokenizer.encode("ROMEO:\n")
    print(f"GPT ({source}): {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"context {cfg.block_size}; torch {torch.__version__}, {args.threads} thread(s), "
          f"median of {args.repeats}")
    for n in (256, 1024):
        rates = {}
        for use_cache in (True, False):
            def run() -> None:
                list(model.generate(prompt, n, 1.0, generator=torch.Generator().manual_seed(0),
                                    use_cache=use_cache))
            ms = timeit(run, args.repeats)["median_ms"]
            rates[use_cache] = n / (ms / 1000)
        print(f"generate {n:5d} tokens: KV cache {rates[True]:8.0f} tok/s | recompute {rates[False]:8.0f} tok/s"
              f" | speed-up x{rates[True] / rates[False]:.2f}")
    trainer = GPT(GPTConfig(**{**cfg.__dict__})).train()
    opt = torch.optim.AdamW(trainer.parameters(), 1e-3)
    x = torch.randint(0, cfg.vocab_size, (32, cfg.block_size))

    def step() -> None:
        loss = trainer.loss(x, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ms = timeit(step, max(3, args.repeats), warmup=2)["median_ms"]
    print(f"training (batch 32 x {cfg.block_size}, fp32): {x.numel() / (ms / 1000):8.0f} tok/s")


if __name__ == "__main__":
    main()
