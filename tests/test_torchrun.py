"""The shared loop under ``torchrun --nproc_per_node 2`` (gloo, CPU) matches the single-process run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import free_port

HERE = Path(__file__).resolve().parent
TOLERANCE = 1e-5  # float32 sums in a different order: per-step losses and weights agree to ~1e-7


def run(cmd: list[str], tmp_path: Path, timeout: int = 300) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_process_ddp_matches_single_process(tmp_path):
    single, ddp = tmp_path / "single.json", tmp_path / "ddp.json"
    run([sys.executable, str(HERE / "ddp_toy.py"), "--out", str(single)], tmp_path)
    run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         str(HERE / "ddp_toy.py"), "--out", str(ddp)], tmp_path)
    a, b = json.loads(single.read_text()), json.loads(ddp.read_text())
    assert (a["world_size"], b["world_size"]) == (1, 2) and b["rank_env"] == "0"
    assert len(a["losses"]) == len(b["losses"]) == 30
    assert b["losses"] == pytest.approx(a["losses"], rel=TOLERANCE, abs=TOLERANCE)
    assert a["losses"][-1] < a["losses"][0] / 5  # it did learn
    assert [h["step"] for h in b["history"]] == [10, 20, 30]
    assert [h["val_loss"] for h in b["history"]] == pytest.approx([h["val_loss"] for h in a["history"]],
                                                                    rel=TOLERANCE, abs=TOLERANCE)
    for k, w in a["weights"].items():
        torch.testing.assert_close(torch.tensor(b["weights"][k]), torch.tensor(w), rtol=TOLERANCE, atol=TOLERANCE)


def test_a_time_budget_stops_every_process_at_the_same_step(tmp_path):
    """Each process measures its own clock; without agreeing, the one whose budget ran out first left the
    others waiting in the next gradient all-reduce forever (measured: a hang)."""
    out = tmp_path / "budget.json"
    run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(HERE / "ddp_toy.py"),
         "--out", str(out), "--steps", "100000", "--max-minutes", str(1.5 / 60), "--step-sleep", "0.02",
         "--fast-clock-rank", "1"], tmp_path, timeout=120)
    result = json.loads(out.read_text())
    assert 10 < result["steps_done"] < 100000 and len(result["losses"]) == result["steps_done"]
