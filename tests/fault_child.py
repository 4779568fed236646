"""A training run for tests/test_faults.py to kill: the toy task, or any ``python -m training.<task>``.

    python tests/fault_child.py toy OUT_DIR STEPS
    python tests/fault_child.py module training.gpt [its arguments...]

Environment:
- FAULT_STALL_AT=k, FAULT_MARKER=path: the k-th write of a checkpoint.pt stops halfway (half the bytes
  written and fsynced into the temporary file), creates the marker file and sleeps, so the test can
  SIGKILL the process at exactly that moment.
- FAULT_CHECKPOINTS=dir: checkpoints go there instead of the project's checkpoints/ (a trainer's
  checkpoint folder is not a CLI option, and the real one may hold a run in progress).
The toy run prints one JSON line: its validation history and final weights.
"""
from __future__ import annotations

import io
import json
import os
import runpy
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
torch.set_num_threads(1)


def install_stall() -> None:
    stall_at, marker = int(os.environ.get("FAULT_STALL_AT", 0)), os.environ.get("FAULT_MARKER")
    if not stall_at:
        return
    real_save, count = torch.save, [0]

    def stalling_save(obj, f, *args, **kwargs):
        if "checkpoint.pt" in os.path.basename(str(getattr(f, "name", f))):
            count[0] += 1
            if count[0] == stall_at:
                buf = io.BytesIO()
                real_save(obj, buf, *args, **kwargs)
                data = buf.getvalue()
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                Path(marker).write_text(str(f.name))
                time.sleep(600)  # killed here
        return real_save(obj, f, *args, **kwargs)
    torch.save = stalling_save


def redirect_checkpoints() -> None:
    folder = os.environ.get("FAULT_CHECKPOINTS")
    if not folder:
        return
    import training.common
    import training.loop
    training.common.CHECKPOINTS = Path(folder)
    real_fit = training.loop.fit

    def guarded_fit(model, data, loss_fn, cfg, *args, **kwargs):
        if not Path(cfg.out_dir).resolve().is_relative_to(Path(folder).resolve()):
            raise SystemExit(f"refusing to write checkpoints to {cfg.out_dir} (outside {folder})")
        return real_fit(model, data, loss_fn, cfg, *args, **kwargs)
    training.loop.fit = guarded_fit


def toy(out_dir: str, steps: int) -> None:
    from toys import TinyConfig, TinyNet, full_mse, mse_loss, regression_data
    from training.loop import TrainConfig, fit
    torch.manual_seed(0)
    model = TinyNet(TinyConfig())
    train, val = regression_data(200, seed=0), regression_data(64, seed=1)
    cfg = TrainConfig(steps=steps, batch_size=16, lr=3e-2, eval_every=10, bf16=False, warmup_steps=5,
                      out_dir=out_dir)
    result = fit(model, train, mse_loss, cfg, evaluate=full_mse(val))
    print(json.dumps({"steps": result.steps_done, "val_loss": [h["val_loss"] for h in result.history],
                      "weights": [x for p in model.parameters() for x in p.flatten().tolist()]}))


def main() -> None:
    # The same initial weights in every run, also for a trainer that builds its model before seeding
    # (training.gpt does: two of its runs start from different weights).
    torch.manual_seed(0)
    install_stall()
    redirect_checkpoints()
    if sys.argv[1] == "toy":
        toy(sys.argv[2], int(sys.argv[3]))
    else:
        module = sys.argv[2]
        sys.argv = [module, *sys.argv[3:]]
        # fit is looked up when the trainer module runs: patch before it imports it
        runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
