"""Next-token sampling from logits, shared by every autoregressive model here.

Order of operations (documented because it changes results):
  1. temperature == 0 -> greedy (argmax); nothing else applies. So is a temperature too small for
     float32 (below its smallest normal number, e.g. 1e-300), which is greedy in the limit anyway.
  2. divide logits by the temperature (after shifting the largest to 0, which leaves the distribution
     unchanged and keeps a tiny temperature from overflowing to inf - inf = nan);
  3. top-k: keep the k largest logits (k <= 0 or k >= vocab: no-op);
  4. top-p (nucleus): keep the smallest set of most likely tokens whose cumulative probability reaches p,
     computed on the distribution left after top-k; the most likely token is always kept;
  5. sample from the renormalized distribution with the caller's ``torch.Generator`` (reproducible).
"""
from __future__ import annotations

import torch


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1, None]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    # Drop a token when the tokens before it already reach p; the first token is never dropped.
    drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token id per row of ``logits`` (shape ``[..., vocab]``); returns shape ``[...]``."""
    logits = logits.float()
    if temperature < torch.finfo(torch.float32).tiny:
        return logits.argmax(-1)
    logits = (logits - logits.amax(-1, keepdim=True)) / temperature
    logits = top_p_filter(top_k_filter(logits, top_k), top_p)
    probs = logits.softmax(-1)
    flat = probs.reshape(-1, probs.size(-1))
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
