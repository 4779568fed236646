"""Train / evaluate the character-level language models on Tiny Shakespeare.

    python -m training.gpt                      # GPT  -> weights/gpt-shakespeare/
    python -m training.gpt --model lstm         # LSTM -> weights/lstm-shakespeare/
    python -m training.gpt evaluate --weights weights/gpt-shakespeare [--text FILE]
"""
from __future__ import annotations

import argparse
import json
import math
import time
import urllib.request
from pathlib import Path

import torch
from torch.utils.data import Dataset

import weights
from models.gpt import GPT, CharLSTM, GPTConfig, LSTMConfig
from training.common import (CHECKPOINTS, ROOT, check_weights_folder, cli, default_data, fail, load_weights_folder,
                             print_json, push_to_hub)
from training.loop import TrainConfig, fit, pick_device, precision

DATA_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
DEFAULT_TEXT = default_data("tinyshakespeare/input.txt")


def load_text(path: str | Path | None = None, download: bool = True) -> str:
    """The corpus; downloaded (once, beside the default path) for users who do not have it."""
    path = Path(path or DEFAULT_TEXT)
    if not path.exists():
        if not download or path != DEFAULT_TEXT:
            fail(f"{path} not found")
        path = ROOT / "data_cache" / "tinyshakespeare.txt"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            urllib.request.urlretrieve(DATA_URL, path)
    return path.read_text(encoding="utf-8")


def split(text: str, train_fraction: float = 0.9) -> tuple[str, str]:
    """Contiguous split: the first 90% trains, the last 10% validates (no overlapping windows leak)."""
    n = int(len(text) * train_fraction)
    return text[:n], text[n:]


class Windows(Dataset):
    """Every (input, target) window of ``block`` characters inside one contiguous id sequence."""

    def __init__(self, ids: torch.Tensor, block: int):
        self.ids, self.block = ids, block

    def __len__(self) -> int:
        # One window short of all (len - block): the last id is never a target. Kept, because the shipped
        # weights were trained with this length and the sampler's order depends on it (1 id in ~1M).
        return len(self.ids) - self.block - 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.ids[i:i + self.block + 1]
        return chunk[:-1], chunk[1:]


@torch.no_grad()
def mean_loss(model: torch.nn.Module, ids: torch.Tensor, block: int, batch: int = 32) -> float:
    """Mean next-character cross-entropy (nats, fp32) over non-overlapping windows covering ``ids``."""
    model.eval()
    ids = ids.to(next(model.parameters()).device)
    n = (len(ids) - 1) // block
    x = ids[:n * block].view(n, block)
    y = ids[1:n * block + 1].view(n, block)
    total = sum(model.loss(x[i:i + batch], y[i:i + batch]).item() * len(x[i:i + batch]) * block
                for i in range(0, n, batch))
    rest = len(ids) - 1 - n * block  # the tail shorter than a block
    if rest > 0:
        total += model.loss(ids[None, -rest - 1:-1], ids[None, -rest:]).item() * rest
    return total / (len(ids) - 1)


def build_model(kind: str, vocab: str, args: argparse.Namespace) -> torch.nn.Module:
    if kind == "gpt":
        return GPT(GPTConfig(vocab=vocab, block_size=args.block_size, n_layer=args.n_layer,
                             n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout))
    return CharLSTM(LSTMConfig(vocab=vocab, n_embd=args.n_embd, hidden=args.hidden, n_layer=args.n_layer,
                               dropout=args.dropout, block_size=args.block_size))


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=["gpt", "lstm"], default="gpt")
    p.add_argument("--data", default=None, help=f"text file (default {DEFAULT_TEXT}; downloaded if absent)")
    p.add_argument("--out", default=None, help="weights folder (default weights/<model>-shakespeare)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--n-layer", type=int, default=None)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None, help="LSTM hidden size")
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-chars", type=int, default=32768,
                   help="validation characters scored during training (the card uses all of them)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and checkpoint) after this long")
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="weights folder (or registered model name)")
    p.add_argument("--data", default=None, help="the corpus whose validation split is scored")
    p.add_argument("--text", default=None, help="score this text file instead of the validation split")


# Defaults per model, chosen to train in about an hour on 2 CPU cores (see the model cards).
DEFAULTS = {"gpt": dict(steps=3000, n_layer=4, n_embd=192, lr=3e-3),
            "lstm": dict(steps=1500, n_layer=2, n_embd=128, hidden=384, lr=3e-3)}


def train(args: argparse.Namespace) -> None:
    for k, v in DEFAULTS[args.model].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    text = load_text(args.data)
    vocab = "".join(sorted(set(text)))
    train_text, val_text = split(text)
    torch.manual_seed(args.seed)  # the initial weights too, so that a rerun reproduces the run
    model = build_model(args.model, vocab, args)
    tok = model.tokenizer
    train_ids = torch.tensor(tok.encode(train_text))
    val_ids = torch.tensor(tok.encode(val_text))
    name = f"{args.model}-shakespeare"
    out = Path(args.out or weights.WEIGHTS_DIR / name)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n_params / 1e6:.2f}M parameters, {len(train_ids):,} train / {len(val_ids):,} val chars")
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      betas=(0.9, 0.99), warmup_steps=args.warmup, min_lr_ratio=0.1, grad_clip=1.0,
                      bf16=not args.no_bf16, eval_every=args.eval_every, monitor="val_loss", mode="min",
                      max_minutes=args.max_minutes, seed=args.seed, out_dir=str(CHECKPOINTS / name),
                      resume=not args.fresh)
    result = fit(model, Windows(train_ids, args.block_size), lambda m, b: m.loss(*b), cfg,
                 evaluate=lambda m: {"val_loss": mean_loss(m, val_ids[:args.eval_chars], args.block_size)})
    if result.steps_done < cfg.steps:
        print(f"stopped at step {result.steps_done}/{cfg.steps} (time budget); run again to resume")
    model.float().eval()
    weights.save(model, out)
    reloaded = type(model).from_pretrained(str(out)).eval()
    val_loss = mean_loss(reloaded, val_ids, args.block_size)  # measured on the shipped fp16 weights
    minutes = sum(h.get("minutes", 0) for h in result.history[-1:])
    write_card(out, args, n_params, val_loss, result, minutes)
    print_json({"model": name, "val_loss": round(val_loss, 4), "perplexity": round(math.exp(val_loss), 3),
                "params": n_params, "steps": result.steps_done, "best_step": result.best_step})
    if args.push_to_hub:
        print(push_to_hub(out, args.push_to_hub))


def write_card(out: Path, args: argparse.Namespace, n_params: int, val_loss: float, result, minutes: float
               ) -> None:
    other = "lstm" if args.model == "gpt" else "gpt"
    other_card = weights.card_metrics(f"{other}-shakespeare")
    compare = (f"The {other.upper()} baseline in this project: validation loss "
               f"{other_card['val_loss']:.4f} nats/char (`weights/{other}-shakespeare`)."
               if "val_loss" in other_card else "")
    arch = (f"{args.n_layer} layers, {args.n_head} heads, {args.n_embd}-dim, context {args.block_size}"
            if args.model == "gpt" else f"{args.n_layer}-layer LSTM, hidden {args.hidden}, embedding {args.n_embd}")
    command = "python -m training.gpt" + (" --model lstm" if args.model == "lstm" else "")
    extra = (f"- Model: {n_params / 1e6:.2f}M parameters ({arch}), dropout {args.dropout}; character "
             f"vocabulary ({len(json.loads((out / 'config.json').read_text())['vocab'])} "
             f"symbols) stored in `config.json`.\n"
             f"- Data: Tiny Shakespeare (1,115,394 characters), split contiguously: first 90% train, last "
             f"10% validation. `val_loss` is the mean next-character cross-entropy in nats over the whole "
             f"validation split (non-overlapping windows of {args.block_size}), measured on the shipped fp16 "
             f"weights with `python -m training.gpt evaluate --weights weights/{args.model}-shakespeare`.\n"
             f"- Training: {result.steps_done} steps of {args.batch_size}x{args.block_size} characters, AdamW "
             f"lr {args.lr} (warm-up + cosine), weight decay {args.weight_decay}, "
             f"{precision(not args.no_bf16)} on {pick_device().type.upper()}, "
             f"best step {result.best_step}; about {minutes:.0f} minutes of the last run on a 2-core CPU.\n"
             f"- Reference: nanoGPT's shakespeare_char (10.7M parameters, GPU) reaches 1.4697.\n{compare}")
    weights.write_card(out, f"{args.model}-shakespeare",
                       description="A character-level language model trained from scratch on Tiny Shakespeare.",
                       metrics={"val_loss": val_loss, "perplexity": math.exp(val_loss)},
                       dataset="tiny_shakespeare", dataset_name="Tiny Shakespeare", task_type="text-generation",
                       command=command, extra=extra, tags=["shakespeare"])


def load_for_eval(path_or_name: str) -> torch.nn.Module:
    path = Path(path_or_name)
    if not path.is_dir() and path_or_name in weights.MODELS:
        path = weights.local_dir(path_or_name)
    check_weights_folder(path)
    try:
        config = json.loads((path / "config.json").read_text())
    except ValueError as e:
        fail(f"{path / 'config.json'} is not valid JSON: {e}")
    cls = GPT if isinstance(config, dict) and "n_head" in config else CharLSTM
    return load_weights_folder(cls, path)


def evaluate(args: argparse.Namespace) -> None:
    model = load_for_eval(args.weights)
    if args.text:
        if not Path(args.text).is_file():
            fail(f"{args.text} not found")
        text = Path(args.text).read_text(encoding="utf-8")
    else:
        text = split(load_text(args.data))[1]
    missing = model.tokenizer.unknown(text)
    if missing:
        fail(f"{len(missing)} characters are not in the model's vocabulary: "
             f"{' '.join(repr(c) for c in missing[:20])}")
    if len(text) < 2:
        fail("the text needs at least two characters")
    ids = torch.tensor(model.tokenizer.encode(text))
    start = time.time()
    loss = mean_loss(model, ids, model.config.block_size)
    print_json({"loss": round(loss, 4), "perplexity": round(math.exp(loss), 3), "chars": len(text),
                "seconds": round(time.time() - start, 1)})


def main() -> None:
    args = cli(__doc__, add_train_args, add_eval_args)
    if args.command == "evaluate":
        evaluate(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
