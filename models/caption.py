"""Image captioning: a convolutional encoder that keeps a spatial grid of features and a Transformer
decoder (causal self-attention + cross-attention to the grid), with greedy and beam-search decoding.

Images are RGB floats in [0, 1], shape (B, 3, S, S) with S = ``config.image_size``; the word vocabulary
(specials first) is part of the config, so it travels with the weights. Pure tensor code, no I/O.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from models.classify import CIFAR10_MEAN, CIFAR10_STD, CompactTrunk

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
PAD, BOS, EOS, UNK = range(4)


def tokenize(text: str) -> list[str]:
    """Lower-case alphabetic words (the usual Flickr8k/COCO caption preprocessing)."""
    return re.findall(r"[a-z]+", text.lower())


@dataclass
class CaptionConfig:
    vocab: list[str] = field(default_factory=lambda: list(SPECIALS))
    encoder: str = "compact"          # compact (airbench conv stack) | resnet18 (torchvision trunk)
    widths: list[int] = field(default_factory=lambda: [32, 128, 256])  # compact encoder blocks
    whiten_kernel: int = 2
    image_size: int = 96              # images are resized to image_size x image_size
    dim: int = 256
    layers: int = 3
    heads: int = 4
    ffn: int = 1024
    dropout: float = 0.1
    max_len: int = 24                 # tokens of a caption including <bos> / <eos>
    mean: list[float] = field(default_factory=lambda: list(CIFAR10_MEAN))
    std: list[float] = field(default_factory=lambda: list(CIFAR10_STD))


@dataclass
class Hypothesis:
    tokens: list[int]                 # word ids, without <bos>/<eos>
    logprob: float                    # sum of the log-probabilities (including <eos> when finished)
    score: float                      # logprob / length penalty: what beam search ranks by
    finished: bool = True


# --------------------------------------------------------------------------- encoder

class ResNetEncoder(nn.Module):
    """torchvision ResNet-18 up to layer4 (stride 32), for ImageNet-pretrained starts (``--pretrained``)."""

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet18
        net = resnet18()
        self.trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2,
                                   net.layer3, net.layer4)
        self.channels = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


def grid_size(config: CaptionConfig) -> int:
    s = config.image_size
    if config.encoder == "resnet18":
        return math.ceil(s / 32)
    s = s - config.whiten_kernel + 1
    for _ in config.widths:
        s //= 2
    return s


# --------------------------------------------------------------------------- decoder

class CrossAttention(nn.Module):
    """Multi-head attention of the words to the grid; the grid's keys/values are computed once per image
    (``project``) and shared by every caption / beam of that image."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.record = False
        self.last_attention: torch.Tensor | None = None  # (B, heads, T, N) when record

    def project(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, N, C = memory.shape
        k, v = self.kv(memory).view(B, N, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        return k, v

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q = self.q(x).view(B, T, self.heads, C // self.heads).transpose(1, 2)
        if self.record:
            att = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(-1)
            self.last_attention = att.detach()
            y = att @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention, cross-attention to the grid, MLP."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.cross = CrossAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))
        self.drop = nn.Dropout(dropout)

    def self_attention(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        if pad is not None:  # padded keys are masked too (they only ever follow <eos>, so this is belt and braces)
            mask = mask & ~pad[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor],
                pad: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.self_attention(self.ln1(x), pad))
        x = x + self.drop(self.cross(self.ln2(x), *kv))
        return x + self.drop(self.mlp(self.ln3(x)))


# --------------------------------------------------------------------------- the captioner

class Captioner(nn.Module, PyTorchModelHubMixin):
    """CNN grid encoder + Transformer decoder. ``forward(images, tokens)`` gives next-word logits."""

    def __init__(self, config: CaptionConfig):
        super().__init__()
        if isinstance(config, dict):
            config = CaptionConfig(**config)
        if config.dim % config.heads:
            raise ValueError("dim must divide by heads")
        self.config = config
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        self.encoder = ResNetEncoder() if config.encoder == "resnet18" else \
            CompactTrunk(config.widths, config.whiten_kernel)
        d, g = config.dim, grid_size(config)
        self.grid = g
        self.feature_proj = nn.Sequential(nn.Linear(self.encoder.channels, d), nn.LayerNorm(d))
        self.grid_pos = nn.Parameter(torch.randn(1, g * g, d) * 0.02)
        self.embed = nn.Embedding(len(config.vocab), d, padding_idx=PAD)
        self.pos = nn.Parameter(torch.randn(1, config.max_len, d) * 0.02)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(DecoderLayer(d, config.heads, config.ffn, config.dropout)
                                    for _ in range(config.layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, len(config.vocab), bias=False)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not name.startswith("encoder"):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.head.weight = self.embed.weight  # tied input / output word embeddings
        self.word_index = {w: i for i, w in enumerate(config.vocab)}

    # ----------------------------------------------------------------- pieces

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder grid: (B, 3, S, S) floats in [0, 1] -> (B, grid*grid, channels)."""
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        return self.encoder(x).flatten(2).transpose(1, 2)

    def memory(self, features: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys/values of the grid (computed once per image)."""
        m = self.drop(self.feature_proj(features.float()) + self.grid_pos)
        return [layer.cross.project(m) for layer in self.layers]

    def decode(self, memory: list[tuple[torch.Tensor, torch.Tensor]], tokens: torch.Tensor,
               index: torch.Tensor | None = None) -> torch.Tensor:
        """Next-word logits (B, T, V) for token prefixes (B, T); ``index`` (B,) picks each row's image."""
        T = tokens.shape[1]
        if T > self.config.max_len:
            raise ValueError(f"at most {self.config.max_len} tokens, got {T}")
        x = self.drop(self.embed(tokens) + self.pos[:, :T])
        pad = tokens == PAD
        pad = pad if bool(pad.any()) else None
        for layer, (k, v) in zip(self.layers, memory):
            if index is not None:
                k, v = k[index], v[index]
            x = layer(x, (k, v), pad)
        return self.head(self.ln(x))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.memory(self.features(images)), tokens, index)

    # ----------------------------------------------------------------- words

    @property
    def vocab(self) -> list[str]:
        return list(self.config.vocab)

    def encode_text(self, text: str) -> list[int]:
        """<bos> words <eos>, unknown words as <unk>, cut to max_len."""
        ids = [self.word_index.get(w, UNK) for w in tokenize(text)][: self.config.max_len - 2]
        return [BOS, *ids, EOS]

    def words(self, ids: list[int]) -> list[str]:
        return [self.config.vocab[i] for i in ids if i not in (PAD, BOS, EOS)]

    # ----------------------------------------------------------------- decoding

    def step_fn(self, memory: list[tuple[torch.Tensor, torch.Tensor]]) -> Callable[[torch.Tensor], torch.Tensor]:
        """log p(next word | prefix) for prefixes (n, t) of one image's ``memory`` (batch 1)."""
        def step(prefix: torch.Tensor) -> torch.Tensor:
            index = torch.zeros(len(prefix), dtype=torch.long)
            logits = self.decode(memory, prefix, index)[:, -1].float()
            logits[:, PAD] = logits[:, BOS] = logits[:, UNK] = -math.inf  # never generated ("<unk>" is no word)
            return logits.log_softmax(-1)
        return step

    @torch.no_grad()
    def greedy(self, features: torch.Tensor, max_len: int | None = None) -> list[list[int]]:
        """Greedy captions (word ids) for a batch of encoder grids (B, N, C)."""
        max_len = min(max_len or self.config.max_len, self.config.max_len)
        memory = self.memory(features)
        seqs = torch.full((len(features), 1), BOS, dtype=torch.long)
        done = torch.zeros(len(features), dtype=torch.bool)
        for _ in range(max_len - 1):
            logits = self.decode(memory, seqs)[:, -1]
            logits[:, PAD] = logits[:, BOS] = logits[:, UNK] = -math.inf
            nxt = logits.argmax(-1).masked_fill(done, PAD)
            seqs = torch.cat([seqs, nxt[:, None]], 1)
            done |= nxt == EOS
            if done.all():
                break
        out = []
        for row in seqs[:, 1:].tolist():
            out.append(row[:row.index(EOS)] if EOS in row else [t for t in row if t != PAD])
        return out

    @torch.no_grad()
    def beam(self, features: torch.Tensor, beam_size: int = 3, length_penalty: float = 0.0,
             no_repeat_ngram: int = 0, max_len: int | None = None) -> list[Hypothesis]:
        """Beam search for one image's grid (1, N, C) or (N, C): the hypotheses, best first."""
        if features.dim() == 2:
            features = features[None]
        memory = self.memory(features[:1])
        max_len = min(max_len or self.config.max_len, self.config.max_len)
        return beam_search(self.step_fn(memory), BOS, EOS, beam_size, max_len - 1, length_penalty, no_repeat_ngram)

    @torch.no_grad()
    def cross_attention(self, features: torch.Tensor, tokens: list[int]) -> torch.Tensor:
        """Cross-attention of each generated word to the grid, averaged over heads and layers:
        (len(tokens) + 1, grid, grid), one map per word of ``tokens`` then one for <eos>. Row t is the
        attention of the step that *produced* word t (its query is the previous word)."""
        if features.dim() == 2:
            features = features[None]
        seq = torch.tensor([[BOS, *tokens]], dtype=torch.long)[:, : self.config.max_len]
        crosses = [layer.cross for layer in self.layers]
        for c in crosses:
            c.record = True
        try:
            self.decode(self.memory(features[:1]), seq)
            maps = torch.stack([c.last_attention[0].float().mean(0) for c in crosses]).mean(0)
        finally:
            for c in crosses:
                c.record, c.last_attention = False, None
        return maps.view(-1, self.grid, self.grid)


# --------------------------------------------------------------------------- beam search

def _banned(seq: list[int], n: int) -> set[int]:
    """Tokens that would repeat an n-gram already in ``seq`` (fairseq's no-repeat-ngram rule)."""
    if n <= 0 or len(seq) < n - 1:
        return set()
    if n == 1:
        return set(seq)
    tail = tuple(seq[len(seq) - n + 1:])
    return {seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i:i + n - 1]) == tail}


def length_norm(length: int, alpha: float) -> float:
    """GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al., 2016); alpha 0 ranks by log-prob."""
    return ((5 + length) / 6) ** alpha


def beam_search(step: Callable[[torch.Tensor], torch.Tensor], bos: int, eos: int, beam_size: int, max_steps: int,
                length_penalty: float = 0.0, no_repeat_ngram: int = 0) -> list[Hypothesis]:
    """Beam search over ``step(prefixes (n, t)) -> log-probs (n, V)``, prefixes starting with ``bos``.

    Keeps the ``beam_size`` best unfinished prefixes; a prefix extended by ``eos`` (when that candidate
    ranks among the step's top ``beam_size``, as in Hugging Face's implementation) is a finished
    hypothesis of length (words + 1) scored logprob / length_norm. Stops when ``beam_size`` hypotheses
    are finished and no live prefix can still beat the worst of them (exact: log-probs only fall, and
    for alpha > 0 the bound uses the most favourable length left), or after ``max_steps`` tokens (live
    prefixes then become unfinished hypotheses, ranked after the finished ones).
    Returns up to ``beam_size`` hypotheses, best first; beam_size 1 is greedy decoding (the length penalty
    then changes nothing: the search ends when <eos> is the most likely next token).
    """
    if beam_size < 1:
        raise ValueError("beam_size must be at least 1")
    seqs = torch.full((1, 1), bos, dtype=torch.long)
    scores = torch.zeros(1)
    finished: list[Hypothesis] = []
    for t in range(max_steps):
        logp = step(seqs).float()
        if no_repeat_ngram:
            for b, row in enumerate(seqs[:, 1:].tolist()):
                banned = _banned(row, no_repeat_ngram)
                if banned:
                    logp[b, list(banned)] = -math.inf
        V = logp.shape[1]
        cand = (scores[:, None] + logp).view(-1)
        top = cand.topk(min(2 * beam_size, int(torch.isfinite(cand).sum())))
        keep_rows, keep_words, keep_scores = [], [], []
        for rank, (s, idx) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            b, w = divmod(idx, V)
            if w == eos:
                if rank >= beam_size:  # only an <eos> among this step's top beam_size ends a hypothesis
                    continue
                length = t + 1
                finished.append(Hypothesis(seqs[b, 1:].tolist(), s, s / length_norm(length, length_penalty)))
            elif len(keep_rows) < beam_size:
                keep_rows.append(b)
                keep_words.append(w)
                keep_scores.append(s)
        if not keep_rows:
            break
        seqs = torch.cat([seqs[keep_rows], torch.tensor(keep_words)[:, None]], 1)
        scores = torch.tensor(keep_scores)
        if len(finished) >= beam_size:
            worst = sorted(h.score for h in finished)[-beam_size]
            # the best a live prefix can still reach: its score now (log-probs only fall) at the most
            # favourable length penalty it can get before max_steps
            n = max(t + 2, max_steps) if length_penalty > 0 else t + 2
            best_live = float(scores.max()) / length_norm(n, length_penalty)
            if best_live <= worst or beam_size == 1:  # greedy stops at its first <eos>, whatever the penalty
                break
    else:  # out of steps: the live prefixes fill up the list, ranked after every finished hypothesis
        for row, s in zip(seqs[:, 1:].tolist(), scores.tolist()):
            finished.append(Hypothesis(row, s, s / length_norm(len(row), length_penalty), finished=False))
    return sorted(finished, key=lambda h: (not h.finished, -h.score))[:beam_size]
