"""Character-level language models: a GPT (decoder-only Transformer) and an LSTM baseline.

Both store their vocabulary in their config, so a weights folder alone encodes and decodes text, and
both expose the same two operations the app needs: ``generate`` (a stream of token ids) and
``log_probs`` (how surprised the model is by each character of a text).
"""

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .sampling import sample_next


class CharTokenizer:
    """Characters <-> ids over a fixed vocabulary string."""

    def __init__(self, vocab: str):
        self.vocab = vocab
        self.index = {c: i for i, c in enumerate(vocab)}

    def unknown(self, text: str) -> list[str]:
        return sorted({c for c in text if c not in self.index})

    def encode(self, text: str) -> list[int]:
        missing = self.unknown(text)
        if missing:
            raise ValueError(f"characters not in the vocabulary: {' '.join(repr(c) for c in missing)}")
        return [self.index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] for i in ids)


# --------------------------------------------------------------------------- GPT

@dataclass
class GPTConfig:
    vocab: str                 # the characters, in id order
    block_size: int = 256      # context length
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.2
    bias: bool = False

    def __post_init__(self) -> None:
        if self.block_size < 2:  # one token of context needs a window of two: scoring would never advance
            raise ValueError(f"block_size must be at least 2, got {self.block_size}")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        if cache is not None:  # keys/values of earlier positions, computed once
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        if cache is None or T > 1:
            # Prefill with a cache: queries sit at the end of the keys, so the causal mask is offset.
            offset = k.size(2) - T
            mask = None if offset == 0 else torch.ones(T, k.size(2), dtype=torch.bool,
                                                       device=x.device).tril(offset)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:  # one new query attends to everything before it
            y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.proj(y)), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias), nn.GELU(),
                                 nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, cache=None):
        a, cache = self.attn(self.ln1(x), cache)
        x = x + a
        return x + self.mlp(self.ln2(x)), cache


class GPT(nn.Module, PyTorchModelHubMixin, license="mit", tags=["text-generation", "char-level"]):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tokenizer = CharTokenizer(config.vocab)
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied input/output embeddings
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """Logits for every position of ``idx`` ([B, T]); ``cache`` holds earlier positions' keys/values."""
        past = 0 if cache is None else cache[0][0].size(2)
        if past + idx.size(1) > self.config.block_size:
            raise ValueError(f"{past + idx.size(1)} positions exceed block_size {self.config.block_size}")
        pos = torch.arange(past, past + idx.size(1), device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache[i])
            new_cache.append(kv)
        return self.head(self.ln_f(x)), new_cache

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, _ = self(idx)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    @torch.no_grad()
    def log_probs(self, ids: list[int]) -> torch.Tensor:
        """log p(ids[i] | ids[:i]) for i >= 1, with a sliding window past ``block_size``."""
        return _windowed_log_probs(lambda x: self(x)[0], ids, self.config.block_size)

    @torch.no_grad()
    def generate(self, ids: list[int], max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, generator: torch.Generator | None = None, use_cache: bool = True
                 ) -> Iterator[int]:
        """Yield new token ids one at a time.

        Without the cache every step re-reads the last ``block_size`` tokens (nanoGPT's sliding window).
        With it each step costs one position; when the context is full the cache is rebuilt from the
        last ``block_size // 2`` tokens (learned absolute positions cannot slide), so the two paths
        give identical tokens while the text fits in ``block_size``.
        """
        if not ids:
            raise ValueError("generation needs at least one token of context")
        block = self.config.block_size
        context = list(ids)
        cache, pending = None, context[-block:]
        for _ in range(max_new_tokens):
            if use_cache:
                if cache is not None and cache[0][0].size(2) + len(pending) > block:
                    cache, pending = None, context[-(block // 2):]
                logits, cache = self(torch.tensor([pending]), cache)
            else:
                logits, _ = self(torch.tensor([context[-block:]]))
            token = int(sample_next(logits[0, -1], temperature, top_k, top_p, generator))
            context.append(token)
            pending = [token]
            yield token


# --------------------------------------------------------------------------- LSTM baseline

@dataclass
class LSTMConfig:
    vocab: str
    n_embd: int = 128
    hidden: int = 512
    n_layer: int = 2
    dropout: float = 0.2
    block_size: int = 256      # training sequence length (the LSTM itself has no context limit)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


class CharLSTM(nn.Module, PyTorchModelHubMixin, license="mit", tags=["text-generation", "char-level"]):
    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.config = config
        self.tokenizer = CharTokenizer(config.vocab)
        self.emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.lstm = nn.LSTM(config.n_embd, config.hidden, config.n_layer, batch_first=True,
                            dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, idx: torch.Tensor, state=None):
        out, state = self.lstm(self.emb(idx), state)
        return self.head(self.drop(out)), state

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, _ = self(idx)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    @torch.no_grad()
    def log_probs(self, ids: list[int]) -> torch.Tensor:
        logits, _ = self(torch.tensor([ids[:-1]]))
        return logits[0].float().log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]

    @torch.no_grad()
    def generate(self, ids: list[int], max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, generator: torch.Generator | None = None, use_cache: bool = True
                 ) -> Iterator[int]:
        """Yield new token ids; the recurrent state is this model's cache."""
        if not ids:
            raise ValueError("generation needs at least one token of context")
        context, state, pending = list(ids), None, list(ids)
        for _ in range(max_new_tokens):
            if use_cache:
                logits, state = self(torch.tensor([pending]), state)
            else:
                logits, _ = self(torch.tensor([context]))
            token = int(sample_next(logits[0, -1], temperature, top_k, top_p, generator))
            context.append(token)
            pending = [token]
            yield token


def _windowed_log_probs(logits_fn, ids: list[int], block: int) -> torch.Tensor:
    """Score every token after the first with at most ``block`` tokens of context (stride block/2)."""
    out = torch.empty(max(0, len(ids) - 1))
    done, start = 0, 0  # ``done`` tokens (after the first) already scored
    while done < len(ids) - 1:
        start = max(0, done + 1 - block // 2) if done else 0
        window = ids[start:start + block]
        logits = logits_fn(torch.tensor([window]))[0].float()
        lp = logits.log_softmax(-1)[:-1].gather(-1, torch.tensor(window[1:])[:, None])[:, 0]
        first = done - start  # skip positions scored by an earlier window
        take = lp[first:]
        out[done:done + len(take)] = take
        done += len(take)
    return out
