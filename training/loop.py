"""The one training loop the trainers in this project use (all but the GAN's alternating updates and the
Gibbs sampler that fits the Bayesian MF, ``training.bpmf``).

It handles what every task needs and nothing task-specific: seeding, device choice, bf16 autocast,
warm-up + cosine / OneCycle schedules, gradient clipping, atomic checkpoint + resume, best-on-validation
selection, early stopping, a time budget, a tqdm bar, metrics history as JSON and TensorBoard scalars,
and DistributedDataParallel when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

A task supplies a dataset, ``loss_fn(model, batch) -> loss`` and ``evaluate(model) -> {name: value}``.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm.auto import tqdm


@dataclass
class TrainConfig:
    steps: int = 1000                 # optimizer steps in total
    batch_size: int = 64              # global batch size (split evenly across processes)
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    optimizer: str = "adamw"          # adamw | sgd (nesterov, momentum = betas[0])
    schedule: str = "cosine"          # cosine (linear warm-up, cosine decay) | onecycle | constant
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0         # cosine floor as a fraction of lr
    grad_clip: float | None = 1.0
    bf16: bool = True                 # autocast to bfloat16 where the hardware runs it fast (see bf16_fast)
    eval_every: int = 200             # steps between evaluations (and checkpoints)
    monitor: str = "val_loss"         # metric used for best-model selection and early stopping
    mode: str = "min"                 # min | max
    patience: int | None = None       # evaluations without improvement before stopping (None or 0: never)
    max_minutes: float | None = None  # wall-clock budget: checkpoint and stop cleanly when spent
    compile: bool = False             # torch.compile the training forward (evaluation stays eager)
    seed: int = 0
    num_workers: int = 0
    shuffle: bool = True
    drop_last: bool = True
    out_dir: str = "checkpoints/run"  # checkpoint.pt, best.pt, history.json, tensorboard/
    resume: bool = True


@dataclass
class TrainResult:
    best_metric: float | None
    best_step: int
    steps_done: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    minutes: float = 0.0


# --------------------------------------------------------------------------- environment

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_distributed() -> bool:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def bf16_fast(device: torch.device) -> bool:
    """Whether bf16 autocast speeds this device up. On CPUs without AVX-512 bf16/AMX, PyTorch emulates
    bf16 matmuls and they run ~10x slower than fp32 (measured on an AVX2-only EPYC), so they never
    get it."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512") and (
        "avx512_bf16" in flags or "amx_bf16" in flags)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast when asked for *and* fast on this device; a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and _bf16_fast_cached(device))


def precision(bf16: bool) -> str:
    """How a run on ``pick_device()`` computes, as a model card says it: "bf16 autocast" or "fp32"."""
    return "bf16 autocast" if bf16 and _bf16_fast_cached(pick_device()) else "fp32"


_BF16: dict[str, bool] = {}


def _bf16_fast_cached(device: torch.device) -> bool:
    if device.type not in _BF16:
        _BF16[device.type] = bf16_fast(device)
    return _BF16[device.type]


# --------------------------------------------------------------------------- pieces

def make_optimizer(model: nn.Module, cfg: TrainConfig,
                   lr_scales: dict[str, float] | None = None) -> torch.optim.Optimizer:
    """No weight decay on biases, norms and embeddings' 1-d parameters (standard practice). ``lr_scales``
    maps parameter-name prefixes to multiples of ``cfg.lr`` (e.g. ``{"encoder.": 0.1}`` for fine-tuning)."""
    by_scale: dict[float, tuple[list[nn.Parameter], list[nn.Parameter]]] = {1.0: ([], [])}
    for name, p in model.named_parameters():
        if p.requires_grad:
            scale = next((v for prefix, v in (lr_scales or {}).items() if name.startswith(prefix)), 1.0)
            by_scale.setdefault(scale, ([], []))[0 if p.ndim >= 2 else 1].append(p)
    groups = [{"params": ps, "weight_decay": wd, "lr": cfg.lr * scale}
              for scale, (decay, no_decay) in by_scale.items()
              for ps, wd in ((decay, cfg.weight_decay), (no_decay, 0.0))]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.betas[0], nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use adamw or sgd")


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(  # each group peaks at its own lr (make_optimizer's lr_scales)
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=cfg.steps,
            pct_start=max(cfg.warmup_steps / cfg.steps, 1e-3), anneal_strategy="cos")

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "cosine":
            # (the peak is used twice and the last step stays just above min_lr_ratio; kept as it is, because
            # the shipped weights were trained with it)
            progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        raise ValueError(f"unknown schedule {cfg.schedule!r}: use cosine, onecycle or constant")

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def rng_state() -> dict[str, Any]:
    """Every random stream a run may draw from (torch CPU and CUDA, Python, NumPy), as checkpointable values."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any] | torch.Tensor) -> None:
    if isinstance(state, torch.Tensor):  # checkpoints written before the other streams were saved
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(out_dir: str | Path) -> Path:
    """Where ``fit`` keeps the state a run resumes from."""
    return Path(out_dir) / "checkpoint.pt"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


class EpochBatches(Sampler[list[int]]):
    """The batches of one epoch, in an order fixed by (seed, epoch), starting at batch ``start``.

    Shuffled with a generator seeded ``seed + epoch`` (or sharded by a ``DistributedSampler`` under
    torchrun), so a resumed run sees exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int,
                 sampler: DistributedSampler | None = None) -> None:
        self.n, self.batch_size, self.shuffle, self.drop_last, self.seed = n, batch_size, shuffle, drop_last, seed
        self.sampler = sampler
        self.epoch, self.start, self.consumed = 0, 0, 0  # consumed: batches of this epoch handed out

    def _indices(self) -> list[int]:
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
            return list(self.sampler)
        if self.shuffle:
            return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        return list(range(self.n))

    def __iter__(self) -> Iterator[list[int]]:
        idx = self._indices()
        batches = [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return iter(batches[self.start:])

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else self.n
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


def _batches(loader: DataLoader, order: EpochBatches) -> Iterator[Any]:
    while True:
        for batch in loader:
            order.consumed += 1
            yield batch
        order.epoch, order.start, order.consumed = order.epoch + 1, 0, 0


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------- the loop

def fit(model: nn.Module, train_data: Dataset, loss_fn: Callable[[nn.Module, Any], torch.Tensor],
        cfg: TrainConfig, evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        collate_fn: Callable | None = None, device: torch.device | None = None,
        optimizer: torch.optim.Optimizer | None = None, on_step: Callable[[int, float], None] | None = None,
        ) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` optimizer steps; return the best validation metric.

    On return, ``model`` holds the best-on-validation weights (or the last ones without ``evaluate``);
    ``out_dir/best.pt`` holds them too, and ``out_dir/checkpoint.pt`` the state to resume from.
    """
    distributed = init_distributed()
    device = device or pick_device()
    seed_everything(cfg.seed)
    model.to(device)
    out = Path(cfg.out_dir)
    ckpt_path, best_path = checkpoint_path(out), out / "best.pt"

    opt = optimizer or make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg)
    step, best, best_step, history, epoch, batch_in_epoch = 0, None, 0, [], 0, 0
    stale, running, stopped_early = 0, None, False
    if cfg.resume and ckpt_path.exists():
        try:
            state = load_checkpoint(ckpt_path)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        except Exception as e:  # another run's model in the same folder, or an unreadable file
            first = " ".join(str(e).split())[:200]
            raise RuntimeError(f"cannot resume from {ckpt_path} ({type(e).__name__}: {first}): it is another "
                               f"model's or unreadable; start over with --fresh, or write to another folder") from e
        step, best, best_step = state["step"], state["best"], state["best_step"]
        history, epoch = state["history"], state["epoch"]
        batch_in_epoch, stale, running = (state.get("batch_in_epoch", 0), state.get("stale", 0),
                                          state.get("running"))
        stopped_early = state.get("stopped_early", False)  # a rerun of a finished early-stopped job stays done
        set_rng_state(state["rng"])
        if is_main():
            tqdm.write(f"resumed from {ckpt_path} at step {step}")

    train_model: nn.Module = model
    if distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    per_rank = cfg.batch_size // world_size()
    if per_rank * world_size() != cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} does not split evenly over {world_size()} processes")
    sampler = DistributedSampler(train_data, shuffle=cfg.shuffle, seed=cfg.seed, drop_last=cfg.drop_last) \
        if distributed else None
    order = EpochBatches(len(train_data), per_rank, cfg.shuffle, cfg.drop_last, cfg.seed, sampler)
    order.epoch, order.start, order.consumed = epoch, batch_in_epoch, batch_in_epoch
    # Its own generator: worker seeds must not draw from the global RNG (dropout's), or resuming would
    # shift the global random stream by one draw.
    loader = DataLoader(train_data, batch_sampler=order, num_workers=cfg.num_workers,
                        collate_fn=collate_fn, generator=torch.Generator().manual_seed(cfg.seed),
                        pin_memory=device.type == "cuda",
                        persistent_workers=cfg.num_workers > 0)
    if len(loader) == 0:
        raise ValueError(f"the training set ({len(train_data)} items) is smaller than one batch ({per_rank})")

    writer = None
    if is_main():
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tensorboard"))

    def save(path: Path, extra: dict[str, Any] | None = None) -> None:
        state = {"model": _unwrap(train_model).state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "step": step, "best": best, "best_step": best_step,
                 "history": history, "epoch": order.epoch, "batch_in_epoch": order.consumed,
                 "stale": stale, "running": running, "rng": rng_state(), "stopped_early": stopped_early,
                 "config": json.dumps(asdict(cfg))}
        state.update(extra or {})
        atomic_save(state, path)

    better = (lambda a, b: a < b) if cfg.mode == "min" else (lambda a, b: a > b)
    start = time.time()
    bar = tqdm(total=cfg.steps, initial=step, disable=not is_main(), dynamic_ncols=True)
    batches = _batches(loader, order)
    # The compiled module shares the parameters; state dicts and evaluation use the eager one.
    forward_model = torch.compile(train_model) if cfg.compile else train_model
    train_model.train()
    while step < cfg.steps and not stopped_early:
        batch = to_device(next(batches), device)
        with autocast(device, cfg.bf16):
            loss = loss_fn(forward_model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        step += 1
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step}: lower the learning rate")
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        if on_step:
            on_step(step, value)
        if writer and step % 10 == 0:
            writer.add_scalar("train/loss", value, step)
            writer.add_scalar("train/lr", sched.get_last_lr()[0], step)

        out_of_time = cfg.max_minutes is not None and (time.time() - start) / 60 > cfg.max_minutes
        if distributed and cfg.max_minutes is not None:  # every process stops at the same step, or DDP hangs
            flag = torch.tensor(int(out_of_time), device=device if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
            record: dict[str, float] = {"step": step, "train_loss": running,
                                        "minutes": (time.time() - start) / 60}
            if evaluate is not None:
                train_model.eval()
                with torch.no_grad(), autocast(device, cfg.bf16):
                    record.update({k: float(v) for k, v in evaluate(model).items()})
                train_model.train()
            history.append(record)
            metric = record.get(cfg.monitor, record["train_loss"] if evaluate is None else None)
            if metric is None:
                raise KeyError(f"evaluate() returned no {cfg.monitor!r}; it returned {sorted(record)}")
            # a NaN/inf metric never counts as best, and any finite one beats a non-finite best
            improved = math.isfinite(metric) and (best is None or not math.isfinite(best) or better(metric, best))
            if improved:
                best, best_step, stale = metric, step, 0
            else:
                stale += 1
            stopped_early = bool(cfg.patience) and stale >= cfg.patience
            if is_main():
                bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in record.items()))
                for k, v in record.items():
                    if k != "step":
                        writer.add_scalar(f"eval/{k}", v, step)
                if improved:
                    atomic_save({"model": _unwrap(train_model).state_dict(), "step": step,
                                 "metric": metric}, best_path)
                save(ckpt_path)
                (out / "history.json").write_text(json.dumps(history, indent=1))
            if stopped_early or out_of_time:
                break
    bar.close()
    if writer:
        writer.close()
    if distributed:
        dist.barrier()
    if best is not None and best_path.exists():  # only a best this run (or the run it resumes) wrote
        model.load_state_dict(load_checkpoint(best_path)["model"])
    return TrainResult(best_metric=best, best_step=best_step, steps_done=step, history=history,
                       stopped_early=stopped_early, minutes=(time.time() - start) / 60)
