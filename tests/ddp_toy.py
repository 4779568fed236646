"""The toy regression of test_loop trained by ``training.loop.fit``: run it plainly (one process) or under
``torchrun --nproc_per_node 2`` (gloo, CPU); it writes the per-step global loss, the evaluation history
and the final weights as JSON to ``--out`` so the test can compare the two runs.

With shuffle off, rank r of 2 sees items r, r+2, r+4, ... so the two ranks' batches of 8 together are the
single process's batch of 16, and DDP's averaged gradient equals the single-process gradient.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from toys import TinyConfig, TinyNet, full_mse, mse_loss, regression_data  # noqa: E402
from training.loop import TrainConfig, fit, is_main, world_size  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--fast-clock-rank", type=int, default=None,
                        help="this rank's clock runs twice as fast (as if its time budget ran out first)")
    parser.add_argument("--step-sleep", type=float, default=0.0)
    args = parser.parse_args()
    if args.fast_clock_rank is not None and int(os.environ.get("RANK", 0)) == args.fast_clock_rank:
        import training.loop as loop
        t0, real = time.time(), time.time
        loop.time = type("FastClock", (), {"time": staticmethod(lambda: t0 + 2 * (real() - t0))})
    torch.set_num_threads(1)
    train, val = regression_data(128, seed=0), regression_data(64, seed=1)
    torch.manual_seed(0)
    model = TinyNet(TinyConfig())
    losses: list[float] = []

    def record(step: int, loss: float) -> None:  # the mean of the ranks' losses = the global batch's loss
        time.sleep(args.step_sleep)
        t = torch.tensor(loss, dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(t)
            t /= dist.get_world_size()
        losses.append(t.item())

    cfg = TrainConfig(steps=args.steps, batch_size=16, lr=3e-2, warmup_steps=3, eval_every=10, bf16=False,
                      shuffle=False, seed=0, out_dir=str(Path(args.out).with_suffix("")) + "_run",
                      max_minutes=args.max_minutes)
    result = fit(model, train, mse_loss, cfg, evaluate=full_mse(val), on_step=record)
    if is_main():
        Path(args.out).write_text(json.dumps({
            "world_size": world_size(), "losses": losses, "history": result.history, "steps_done": result.steps_done,
            "weights": {k: v.tolist() for k, v in model.state_dict().items()},
            "rank_env": os.environ.get("RANK")}))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
