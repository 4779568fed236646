"""The shared training loop on a toy regression task: convergence, resume, atomic checkpoints,
best-on-validation selection, early stopping, the time budget and the learning-rate schedules."""
from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from toys import TinyConfig, TinyNet, full_mse, mse_loss, regression_data, state_copy
from training.loop import TrainConfig, atomic_save, fit, load_checkpoint, make_optimizer, make_scheduler

torch.set_num_threads(1)


def config(tmp_path, **kw) -> TrainConfig:
    base = dict(steps=60, batch_size=16, lr=3e-2, eval_every=20, bf16=False, out_dir=str(tmp_path / "run"),
                warmup_steps=5)
    return TrainConfig(**{**base, **kw})


def new_model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(TinyConfig())


def test_toy_regression_converges(tmp_path):
    train, val = regression_data(512, seed=0), regression_data(128, seed=1)
    model = new_model()
    before = full_mse(val)(model)["val_loss"]
    result = fit(model, train, mse_loss, config(tmp_path, steps=300, eval_every=100), evaluate=full_mse(val))
    after = full_mse(val)(model)["val_loss"]
    assert after < 0.02 < before / 10, (before, after)
    assert result.steps_done == 300 and result.best_metric == pytest.approx(min(
        h["val_loss"] for h in result.history))
    out = tmp_path / "run"
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [100, 200, 300]
    assert (out / "checkpoint.pt").is_file() and (out / "best.pt").is_file()
    assert any((out / "tensorboard").iterdir())


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path):
    train, val = regression_data(200, seed=0), regression_data(64, seed=1)  # 12 batches an epoch: resume mid-epoch
    full = new_model()
    fit(full, train, mse_loss, config(tmp_path / "a", steps=60, eval_every=10), evaluate=full_mse(val))

    class Crash(Exception):
        pass

    def crash_at_25(step: int, loss: float) -> None:
        if step == 25:
            raise Crash
    interrupted = new_model()
    with pytest.raises(Crash):
        fit(interrupted, train, mse_loss, config(tmp_path / "b", steps=60, eval_every=10),
            evaluate=full_mse(val), on_step=crash_at_25)
    assert load_checkpoint(tmp_path / "b" / "run" / "checkpoint.pt")["step"] == 20
    resumed = new_model(seed=123)  # different init: everything must come from the checkpoint
    result = fit(resumed, train, mse_loss, config(tmp_path / "b", steps=60, eval_every=10),
                 evaluate=full_mse(val))
    assert result.steps_done == 60
    for k, v in state_copy(full).items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=1e-6)
    last_a = load_checkpoint(tmp_path / "a" / "run" / "checkpoint.pt")
    last_b = load_checkpoint(tmp_path / "b" / "run" / "checkpoint.pt")
    assert [h["val_loss"] for h in last_a["history"]] == pytest.approx([h["val_loss"] for h in last_b["history"]])


def test_compiled_training_matches_eager_and_saves_plain_keys(tmp_path):
    train, val = regression_data(128, seed=0), regression_data(64, seed=1)
    eager, compiled = new_model(), new_model()
    fit(eager, train, mse_loss, config(tmp_path / "eager", steps=20, eval_every=10), evaluate=full_mse(val))
    fit(compiled, train, mse_loss, config(tmp_path / "compiled", steps=20, eval_every=10, compile=True),
        evaluate=full_mse(val))
    for k, v in state_copy(eager).items():  # the same steps: only kernel-level rounding differs
        torch.testing.assert_close(compiled.state_dict()[k], v, rtol=1e-4, atol=1e-5)
    saved = load_checkpoint(tmp_path / "compiled" / "run" / "checkpoint.pt")["model"]
    assert sorted(saved) == sorted(eager.state_dict())  # no "_orig_mod." prefixes: loads into a plain model


def test_checkpoint_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"step": torch.tensor(1)}, path)

    real_save = torch.save

    def crash_halfway(obj, f, *a, **kw):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the process dies while writing
    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"step": torch.tensor(2)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["step"] == 1  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # and no temp file is left over

    # A temp file left by a killed process (as if SIGKILLed mid-write) is never taken for the checkpoint.
    out = tmp_path / "run"
    train = regression_data(64)
    fit(new_model(), train, mse_loss, config(tmp_path, steps=10, eval_every=10))
    (out / ".checkpoint.pt.99999.tmp").write_bytes(b"garbage from a killed run")
    result = fit(new_model(), train, mse_loss, config(tmp_path, steps=20, eval_every=10))
    assert result.steps_done == 20 and load_checkpoint(out / "checkpoint.pt")["step"] == 20


def scripted_eval(values: list[float], model_states: list[dict]):
    """evaluate() returning the given val_loss sequence, recording the weights at each evaluation."""
    calls = iter(values)

    def evaluate(model: nn.Module) -> dict[str, float]:
        model_states.append(state_copy(model))
        return {"val_loss": next(calls), "acc": 0.5}
    return evaluate


def test_best_on_validation_selection(tmp_path):
    states: list[dict] = []
    model = new_model()
    result = fit(model, regression_data(64), mse_loss, config(tmp_path, steps=40, eval_every=10),
                 evaluate=scripted_eval([3.0, 1.0, 2.0, 4.0], states))
    assert result.best_metric == 1.0 and result.best_step == 20 and result.steps_done == 40
    for k, v in states[1].items():  # the model returned holds the step-20 weights, not the last ones
        torch.testing.assert_close(model.state_dict()[k], v)
    assert not torch.equal(states[1]["net.0.weight"], states[3]["net.0.weight"])
    assert load_checkpoint(tmp_path / "run" / "best.pt")["step"] == 20

    # mode="max" picks the largest monitored metric
    states = []
    result = fit(new_model(), regression_data(64), mse_loss,
                 config(tmp_path / "max", steps=30, eval_every=10, monitor="val_loss", mode="max"),
                 evaluate=scripted_eval([1.0, 5.0, 2.0], states))
    assert result.best_metric == 5.0 and result.best_step == 20


def test_early_stopping(tmp_path):
    result = fit(new_model(), regression_data(64), mse_loss, config(tmp_path, steps=1000, eval_every=10, patience=2),
                 evaluate=scripted_eval([1.0, 2.0, 3.0, 0.5, 0.1], []))
    assert result.stopped_early and result.steps_done == 30 and result.best_step == 10


def test_max_minutes_budget_stops_and_checkpoints(tmp_path):
    result = fit(new_model(), regression_data(64), mse_loss,
                 config(tmp_path, steps=100_000, eval_every=100_000, max_minutes=0.5 / 60),
                 on_step=lambda step, loss: time.sleep(0.01))
    assert 5 < result.steps_done < 1000
    assert 0.5 / 60 < result.minutes < 0.2
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == result.steps_done


def lrs(cfg: TrainConfig) -> list[float]:
    model = nn.Linear(2, 1)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg)
    out = []
    for _ in range(cfg.steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules():
    lr = 0.1
    warm_cos = lrs(TrainConfig(steps=110, lr=lr, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1))
    assert warm_cos[:10] == pytest.approx([lr * (i + 1) / 10 for i in range(10)])  # linear warm-up
    assert warm_cos[10] == pytest.approx(lr)                                      # peak
    assert warm_cos[60] == pytest.approx(lr * (0.1 + 0.9 * 0.5))                  # cosine half-way
    assert warm_cos[-1] == pytest.approx(lr * 0.1, rel=1e-2)                       # floor
    assert all(a >= b for a, b in zip(warm_cos[10:], warm_cos[11:]))              # monotone decay

    const = lrs(TrainConfig(steps=20, lr=lr, warmup_steps=4, schedule="constant"))
    assert const[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1]) and const[4:] == pytest.approx([lr] * 16)

    one = lrs(TrainConfig(steps=100, lr=lr, warmup_steps=30, schedule="onecycle"))
    peak = max(range(100), key=one.__getitem__)
    assert one[peak] == pytest.approx(lr) and 28 <= peak <= 31
    assert one[0] < lr / 10 and one[-1] < lr / 100

    with pytest.raises(ValueError, match="unknown schedule"):
        lrs(TrainConfig(steps=5, schedule="triangle"))


def test_weight_decay_skips_biases_and_bad_batch_size(tmp_path):
    opt = make_optimizer(nn.Linear(3, 2), TrainConfig(weight_decay=0.1))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert [p.ndim for p in opt.param_groups[1]["params"]] == [1]
    with pytest.raises(ValueError, match="smaller than one batch"):
        fit(new_model(), regression_data(8), mse_loss, config(tmp_path, batch_size=16))


def test_precision_names_what_autocast_will_do():
    from training.loop import bf16_fast, pick_device, precision
    assert precision(False) == "fp32"
    assert precision(True) == ("bf16 autocast" if bf16_fast(pick_device()) else "fp32")


def test_resuming_another_models_checkpoint_says_to_start_over(tmp_path):
    """A second run of another architecture in the same folder used to end in load_state_dict's size-mismatch
    traceback; the message now names the checkpoint and --fresh."""
    train, val = regression_data(64, seed=0), regression_data(16, seed=1)
    fit(new_model(), train, mse_loss, config(tmp_path, steps=4, eval_every=2), evaluate=full_mse(val))
    wider = TinyNet(TinyConfig(n_hidden=16))
    with pytest.raises(RuntimeError, match="cannot resume from .*checkpoint.pt .*--fresh"):
        fit(wider, train, mse_loss, config(tmp_path, steps=8, eval_every=2), evaluate=full_mse(val))
    fit(wider, train, mse_loss, config(tmp_path, steps=8, eval_every=2, resume=False), evaluate=full_mse(val))


def test_resume_restores_python_and_numpy_random_streams(tmp_path):
    """A loss that draws from Python's and NumPy's global RNGs (augmentations may) resumes exactly."""
    import random

    import numpy as np

    def noisy_loss(model, batch):
        x, y = batch
        jitter = random.random() + float(np.random.rand())
        return nn.functional.mse_loss(model(x * (1 + 0.1 * jitter)).float(), y)

    train = regression_data(200, seed=0)
    full = new_model()
    fit(full, train, noisy_loss, config(tmp_path / "a", steps=30, eval_every=10))

    def crash_at_15(step: int, loss: float) -> None:
        if step == 15:
            raise RuntimeError("crash")
    with pytest.raises(RuntimeError):
        fit(new_model(), train, noisy_loss, config(tmp_path / "b", steps=30, eval_every=10), on_step=crash_at_15)
    resumed = new_model(seed=7)
    fit(resumed, train, noisy_loss, config(tmp_path / "b", steps=30, eval_every=10))
    for k, v in state_copy(full).items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=1e-6)


def test_non_finite_metrics_never_count_as_best(tmp_path):
    states: list[dict] = []
    result = fit(new_model(), regression_data(64), mse_loss, config(tmp_path, steps=40, eval_every=10),
                 evaluate=scripted_eval([float("nan"), 0.5, float("inf"), 0.1], states))
    assert result.best_metric == 0.1 and result.best_step == 40
    assert load_checkpoint(tmp_path / "run" / "best.pt")["step"] == 40


def test_early_stopped_run_stays_done_and_patience_zero_is_off(tmp_path):
    evaluate = scripted_eval([1.0, 2.0, 3.0, 0.5, 0.1] * 4, [])
    first = fit(new_model(), regression_data(64), mse_loss,
                config(tmp_path, steps=1000, eval_every=10, patience=2), evaluate=evaluate)
    again = fit(new_model(), regression_data(64), mse_loss,
                config(tmp_path, steps=1000, eval_every=10, patience=2), evaluate=evaluate)
    assert first.stopped_early and again.stopped_early and again.steps_done == first.steps_done == 30
    never = fit(new_model(), regression_data(64), mse_loss,
                config(tmp_path / "zero", steps=50, eval_every=10, patience=0), evaluate=evaluate)
    assert not never.stopped_early and never.steps_done == 50


def test_resume_keeps_the_best_so_far_and_the_patience_count(tmp_path):
    def crash_at_25(step: int, loss: float) -> None:
        if step == 25:
            raise RuntimeError("killed")
    cfg = config(tmp_path, steps=1000, eval_every=10, patience=2)
    with pytest.raises(RuntimeError, match="killed"):  # evaluations: 1.0 (best) at 10, 3.0 at 20 (stale 1)
        fit(new_model(), regression_data(64), mse_loss, cfg, evaluate=scripted_eval([1.0, 3.0], []),
            on_step=crash_at_25)
    result = fit(new_model(seed=1), regression_data(64), mse_loss, cfg, evaluate=scripted_eval([4.0, 0.1], []))
    assert result.best_metric == 1.0 and result.best_step == 10  # 4.0 at 30 is not a new best
    assert result.stopped_early and result.steps_done == 30  # the second evaluation without improvement
    assert load_checkpoint(tmp_path / "run" / "best.pt")["step"] == 10


def test_a_fresh_run_ignores_an_old_best_checkpoint(tmp_path):
    old = new_model(seed=5)
    atomic_save({"model": old.state_dict(), "step": 99, "metric": 0.0}, tmp_path / "run" / "best.pt")
    model = new_model()
    before = state_copy(model)
    result = fit(model, regression_data(64), mse_loss, config(tmp_path, steps=0, resume=False))
    assert result.steps_done == 0 and result.best_metric is None
    for k, v in before.items():
        torch.testing.assert_close(model.state_dict()[k], v)


def test_onecycle_keeps_each_groups_learning_rate_scale():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    cfg = TrainConfig(steps=20, lr=0.1, warmup_steps=5, schedule="onecycle")
    opt = make_optimizer(model, cfg, lr_scales={"1.": 0.1})
    sched = make_scheduler(opt, cfg)
    peaks = [0.0] * len(opt.param_groups)
    for _ in range(cfg.steps):
        peaks = [max(p, g["lr"]) for p, g in zip(peaks, opt.param_groups)]
        opt.step()
        sched.step()
    assert sorted(round(p, 6) for p in peaks) == [0.01, 0.01, 0.1, 0.1]
