"""Diffusion: the math of the schedules and samplers against closed forms, the U-Net, the trainer's
pieces, and the tab's functions (without a browser)."""
import math
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch

import weights
from models.diffusion import UNet, UNetConfig, timestep_embedding
from models.schedulers import (DDIMScheduler, DDPMScheduler, NoiseSchedule, guided_eps, make_betas, make_scheduler,
                               sample, sample_steps)

TINY = dict(image_size=8, in_channels=1, base_channels=8, channel_mults=[1, 2], attn_resolutions=[4],
            attn_heads=2, num_classes=3, dropout=0.0, num_train_timesteps=50)


# --------------------------------------------------------------------------- schedules

@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_betas_are_valid_and_abar_decreases(kind):
    betas = make_betas(kind, 1000)
    assert betas.shape == (1000,) and (betas > 0).all() and (betas < 1).all()
    abar = torch.cumprod(1 - betas, 0)
    assert (abar[1:] < abar[:-1]).all()
    assert abar[0] > 0.999 and abar[-1] < 1e-3  # starts near the data, ends near pure noise


def test_linear_schedule_endpoints_and_cosine_formula():
    b = make_betas("linear", 1000)
    assert float(b[0]) == pytest.approx(1e-4) and float(b[-1]) == pytest.approx(0.02)
    abar = torch.cumprod(1 - make_betas("cosine", 1000), 0)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    for t in (0, 100, 500, 900):  # abar_t = f(t+1) / f(0), away from the 0.999 clip at the end
        assert float(abar[t]) == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    with pytest.raises(ValueError):
        make_betas("quadratic", 10)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_forward_process_statistics(kind):
    s = NoiseSchedule(1000, kind)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000,), 0.7)
    for t in (0, 250, 999):
        xt = s.add_noise(x0, torch.randn(x0.shape, generator=g), torch.full(x0.shape, t))
        a = float(s.alphas_cumprod[t])
        assert float(xt.mean()) == pytest.approx(math.sqrt(a) * 0.7, abs=0.01)
        assert float(xt.var()) == pytest.approx(1 - a, abs=0.01 + 0.02 * (1 - a))


def test_v_target_gives_back_x0_and_noise_at_every_noise_level():
    s = NoiseSchedule(1000, "cosine", clip_sample=False, prediction_type="v_prediction")
    torch.manual_seed(0)
    x0, noise = torch.rand(4, 1, 8, 8) * 2 - 1, torch.randn(4, 1, 8, 8)
    for t in (0, 10, 500, 999):  # 999: abar 2.4e-9, where an eps model's x_0 guess is its error times 2e4
        tt = torch.full((4,), t)
        v = s.training_target(x0, noise, tt)
        a = s.abar(t).float()
        assert torch.allclose(v, a.sqrt() * noise - (1 - a).sqrt() * x0, atol=1e-6)
        x0_hat, eps_hat = s._x0_and_eps(v, t, s.add_noise(x0, noise, tt))
        assert torch.allclose(x0_hat, x0, atol=1e-5) and torch.allclose(eps_hat, noise, atol=1e-5)
    assert torch.equal(NoiseSchedule(1000, "cosine").training_target(x0, noise, torch.full((4,), 7)), noise)
    with pytest.raises(ValueError, match="prediction type"):
        NoiseSchedule(1000, "cosine", prediction_type="x0")


def test_predict_x0_inverts_add_noise():
    s = NoiseSchedule(1000, "cosine", clip_sample=False)
    x0, noise = torch.rand(4, 1, 5, 5) * 2 - 1, torch.randn(4, 1, 5, 5)
    t = torch.tensor([0, 10, 500, 990])
    xt = s.add_noise(x0, noise, t)
    for i in range(4):
        assert torch.allclose(s.predict_x0(xt[i:i + 1], noise[i:i + 1], int(t[i])), x0[i:i + 1], atol=1e-3)


def _posterior_by_conditioning(abar_t, abar_prev, x0, xt):
    """q(x_prev | x_t, x_0) from Bayes: prior N(sqrt(abar_prev) x0, 1 - abar_prev), likelihood
    x_t | x_prev ~ N(sqrt(alpha) x_prev, 1 - alpha) with alpha = abar_t / abar_prev."""
    alpha = abar_t / abar_prev
    precision = 1 / (1 - abar_prev) + alpha / (1 - alpha)
    var = 1 / precision
    mean = var * (math.sqrt(abar_prev) * x0 / (1 - abar_prev) + math.sqrt(alpha) * xt / (1 - alpha))
    return mean, var


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("t,t_prev", [(1, 0), (500, 499), (999, 998), (999, 979), (40, 20)])
def test_ddpm_posterior_matches_closed_form(kind, t, t_prev):
    s = DDPMScheduler(1000, kind)
    x0, xt = torch.tensor([0.3, -0.8], dtype=torch.float64), torch.tensor([1.2, 0.1], dtype=torch.float64)
    mean, var = s.posterior(x0, xt, t, t_prev)
    a_t, a_prev = float(s.alphas_cumprod[t]), float(s.alphas_cumprod[t_prev])
    want_mean, want_var = _posterior_by_conditioning(a_t, a_prev, x0, xt)
    assert torch.allclose(mean, want_mean, rtol=1e-9) and float(var) == pytest.approx(want_var, rel=1e-9)
    if t_prev == t - 1:  # the seeds' form: beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)
        assert float(var) == pytest.approx(float(s.betas[t]) * (1 - a_prev) / (1 - a_t), rel=1e-9)


def test_set_timesteps():
    s = DDIMScheduler(1000, "linear")
    for n in (1, 20, 50, 1000):
        s.set_timesteps(n)
        ts = s.timesteps.tolist()
        assert len(ts) == n and ts[0] == 999 and (n == 1 or ts[-1] == 0)
        assert all(a > b for a, b in zip(ts, ts[1:]))
    assert s.prev_timestep(0) == -1
    for bad in (0, 1001):
        with pytest.raises(ValueError):
            s.set_timesteps(bad)
    with pytest.raises(ValueError):
        make_scheduler("euler", UNetConfig(), 10)


# --------------------------------------------------------------------------- samplers

class Oracle(torch.nn.Module):
    """The exact noise predictor for data that is a single image x*: eps = (x_t - sqrt(abar) x*) / sqrt(1-abar)."""

    def __init__(self, target: torch.Tensor, schedule: NoiseSchedule):
        super().__init__()
        self.target, self.schedule = target, schedule
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x, t, y):
        self.calls.append(len(x))
        a = self.schedule.abar(t).to(x.dtype).view(-1, 1, 1, 1)
        eps = (x - a.sqrt() * self.target) / (1 - a).sqrt()
        if self.schedule.prediction_type == "v_prediction":
            return a.sqrt() * eps - (1 - a).sqrt() * self.target
        return eps


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("kind,steps,eta", [("ddim", 20, 0.0), ("ddim", 50, 1.0), ("ddpm", 1000, 0.0),
                                            ("ddpm", 25, 0.0)])
def test_samplers_recover_a_point_mass(kind, steps, eta, prediction):
    target = torch.rand(1, 1, 4, 4) * 1.6 - 0.8
    s = make_scheduler(kind, UNetConfig(num_train_timesteps=1000, beta_schedule="cosine", prediction_type=prediction),
                       steps)
    model = Oracle(target, s)
    model.config = UNetConfig(num_classes=2)
    out = sample(model, s, torch.zeros(3, dtype=torch.long), shape=(3, 1, 4, 4), guidance=1.0, eta=eta,
                 generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, target.expand(3, -1, -1, -1), atol=1e-3)


def test_ddim_eta0_is_deterministic_and_eta1_has_ddpm_variance():
    net = UNet(UNetConfig(**TINY)).eval()
    torch.nn.init.normal_(net.head[-1].weight, std=0.1)
    s = make_scheduler("ddim", net.config, 10)
    labels = torch.tensor([0, 1, 2])
    runs = [sample(net, s, labels, shape=(3, 1, 8, 8), guidance=2.0, generator=torch.Generator().manual_seed(7))
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    # eta=0: all randomness is the starting noise; eta=1: sigma equals the DDPM posterior std
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    a = [list(sample_steps(net, s, labels, shape=noise.shape, noise=noise, generator=torch.Generator().manual_seed(i)))[-1].x_t
         for i in (1, 2)]
    assert torch.equal(a[0], a[1])
    ddpm, ddim = DDPMScheduler(1000, "linear"), DDIMScheduler(1000, "linear")
    ddim.set_timesteps(50)
    t, t_prev = int(ddim.timesteps[3]), int(ddim.timesteps[4])
    _, var = ddpm.posterior(torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), t, t_prev)
    a_t, a_prev = ddim.abar(t), ddim.abar(t_prev)
    sigma = ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
    assert float(sigma ** 2) == pytest.approx(float(var), rel=1e-9)


def test_full_ddpm_loop_with_a_trivial_model_stays_finite():
    class Zero(torch.nn.Module):
        config = UNetConfig(num_classes=10)

        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, y):
            return torch.zeros_like(x)

    for kind in ("linear", "cosine"):
        s = DDPMScheduler(1000, kind)
        steps = list(sample_steps(Zero(), s, torch.arange(4), shape=(4, 1, 6, 6), guidance=3.0,
                                  generator=torch.Generator().manual_seed(0)))
        assert len(steps) == 1000 and all(torch.isfinite(st.x_t).all() for st in steps)
        assert steps[-1].x_t.abs().max() <= 1.0 + 1e-5


def test_guidance_is_one_batched_forward_and_combines_linearly():
    calls = []

    def model(x, t, y):
        calls.append(len(x))
        return torch.where((y == 9).view(-1, 1, 1, 1), torch.full_like(x, 1.0), torch.full_like(x, 3.0))

    x, labels = torch.zeros(2, 1, 4, 4), torch.tensor([0, 1])
    eps = guided_eps(model, x, 5, labels, 2.5, null_class=9)
    assert calls == [4] and torch.allclose(eps, torch.full_like(x, 1 + 2.5 * (3 - 1)))
    assert torch.allclose(guided_eps(model, x, 5, labels, 1.0, 9), torch.full_like(x, 3.0))
    assert torch.allclose(guided_eps(model, x, 5, labels, 0.0, 9), torch.full_like(x, 1.0))
    assert torch.allclose(guided_eps(model, x, 5, None, 4.0, 9), torch.full_like(x, 1.0))


# --------------------------------------------------------------------------- the U-Net

@pytest.mark.parametrize("kw", [dict(), dict(patch_size=2, image_size=28, channel_mults=[1, 2], attn_resolutions=[7]),
                                dict(image_size=28, channel_mults=[1, 2, 2], attn_resolutions=[7]),
                                dict(image_size=32, in_channels=3, channel_mults=[1, 2, 2])])
def test_unet_shapes_and_null_class(kw):
    cfg = UNetConfig(**{**TINY, **kw})
    net = UNet(cfg).eval()
    x = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size)
    t = torch.tensor([0, 49])
    assert net(x, t, torch.tensor([0, 2])).shape == x.shape
    torch.nn.init.normal_(net.head[-1].weight)
    assert torch.equal(net(x, t), net(x, t, torch.full((2,), cfg.num_classes)))  # None = the null class
    assert net.class_emb.num_embeddings == cfg.num_classes + 1


def test_timestep_embedding():
    e = timestep_embedding(torch.tensor([0, 10, 999]), 16)
    assert e.shape == (3, 16) and torch.allclose(e[0, :8], torch.ones(8)) and torch.allclose(e[0, 8:], torch.zeros(8))
    assert timestep_embedding(torch.tensor([3]), 7).shape == (1, 7)


def test_unet_save_load_roundtrip(tmp_path):
    net = UNet(UNetConfig(**TINY)).eval()
    torch.nn.init.normal_(net.head[-1].weight, std=0.1)
    weights.save(net, tmp_path / "m")
    back = UNet.from_pretrained(str(tmp_path / "m")).eval()
    assert back.config == net.config
    x, t = torch.randn(1, 1, 8, 8), torch.tensor([3])
    assert torch.allclose(back(x, t, torch.tensor([1])), net(x, t, torch.tensor([1])), atol=1e-2)


# --------------------------------------------------------------------------- trainer pieces

def test_trainee_loss_and_ema():
    from training.diffusion import Images, Trainee
    net = UNet(UNetConfig(**TINY))
    trainee = Trainee(net, ema_decay=0.9, label_dropout=0.5)
    data = Images(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8), torch.arange(8) % 3, flip=True)
    x, y = data.collate([0, 1, 2, 3])
    assert x.min() >= -1 and x.max() <= 1
    loss = trainee(x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for p in trainee.ema.parameters())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    before = [p.clone() for p in trainee.ema.parameters()]
    trainee.update_ema()  # warm-up: decay min(0.9, 2/11)
    for b, e, p in zip(before, trainee.ema.parameters(), net.parameters()):
        assert torch.allclose(e, b + (p - b) * (1 - 2 / 11), atol=1e-6)
    assert "ema.head.2.weight" in trainee.state_dict()  # checkpoints hold the average too


# --------------------------------------------------------------------------- the tab's functions

@pytest.fixture
def tab(monkeypatch):
    """demos.diffusion with a tiny untrained U-Net standing in for the released model (shapes only)."""
    from demos import diffusion as tab
    net = UNet(UNetConfig(**{**TINY, "num_classes": 10})).eval()
    monkeypatch.setattr(tab, "load_model", lambda name: net)
    return tab


def _run(tab, **kw):
    return list(tab.generate(**{"steps": 20, **kw}))  # the tiny model has 50 noise levels


def test_generate_streams_frames_then_the_final_outputs(tab):
    outs = _run(tab, dataset="Fashion-MNIST", class_name="sneaker", sampler="DDIM", steps=45, eta=0.5,
                guidance=2.0, seed=3, n_images=3)
    assert len(outs) > 3  # intermediate frames were streamed before the end
    live, status, frames, slider, view, grid, gif, view_caption = outs[-1]
    assert status.startswith("Done") and len(frames) == 45 and frames[-1]["step"] == 44
    assert live.shape == view.shape and live.dtype == np.uint8 and grid.ndim == 3
    from PIL import Image
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames > 10
    assert slider.minimum == 1 and slider.maximum == 45 and slider.value == 45  # the slider counts sampler steps
    first = outs[0]  # the previous run's outputs are cleared before sampling starts
    assert first[1].startswith("Sampling") and first[2] == [] and first[4:] == (None, None, None, "")
    assert view_caption.startswith("Step 45 of 45")
    # frames are kept at the images' size (3 images: a 2x2 grid, 2 px apart); only the views are zoomed
    h = w = 2 * (TINY["image_size"] + 2) + 2
    assert frames[0]["x_t"].shape == frames[0]["x0"].shape == (h, w, 3)
    assert live.shape == (h * tab.ZOOM, (2 * w + 3) * tab.ZOOM, 3) and grid.shape == (h * tab.ZOOM, w * tab.ZOOM, 3)
    image, text = tab.scrub(frames, 11)
    assert image.shape == live.shape and text.startswith("Step 11 of 45")
    assert np.array_equal(image, tab.side_by_side(frames[10]["x_t"], frames[10]["x0"]))
    assert tab.scrub(frames, 1e9)[1].startswith("Step 45 of 45")  # clamped to the last step
    assert tab.scrub(frames, 0)[1].startswith("Step 1 of 45")
    assert tab.scrub(frames, None) == (gr.skip(), gr.skip())  # the box emptied mid-typing: the view stays
    with pytest.raises(gr.Error, match="Step must be a number"):
        tab.scrub(frames, "six")


def test_generate_is_reproducible_and_keeps_at_most_max_frames(tab, monkeypatch):
    monkeypatch.setattr(tab, "MAX_FRAMES", 10)
    a = _run(tab, sampler="DDPM", steps=40, seed=5, n_images=2, class_name=tab.ALL_CLASSES)[-1]
    b = _run(tab, sampler="DDPM", steps=40, seed=5, n_images=2, class_name=tab.ALL_CLASSES)[-1]
    assert np.array_equal(a[5], b[5]) and len(a[2]) == 10 and a[2][0]["step"] == 0 and a[2][-1]["step"] == 39
    assert "10 of the 40 steps stored" in a[1] and a[3].maximum == 40
    stored = [f["step"] + 1 for f in a[2]]  # 1, 5, 10, ...: a step between them shows the nearest stored one
    assert tab.scrub(a[2], stored[3] + 1)[1].startswith(f"Step {stored[3]} of 40")
    assert a[1].startswith("Done: 2 images, one of each class, DDPM 40 steps, guidance 3")
    c = _run(tab, sampler="DDIM", steps=5, seed=5, n_images=1, class_name=tab.UNCONDITIONAL)[-1]
    assert c[1].startswith("Done: 1 unconditional image(s), DDIM 5 steps, eta 0, seed 5")  # no guidance without a class


def test_every_live_update_shows_the_current_step_when_few_steps_are_stored(tab, monkeypatch):
    """A long DDPM run stores an even spread of steps for the slider; the live view used to show a picture
    only on updates that fell on a stored step (2 of 25 for DDPM-1000), and froze between them."""
    monkeypatch.setattr(tab, "MAX_FRAMES", 4)
    monkeypatch.setattr(tab, "LIVE_UPDATES", 10)
    updates = _run(tab, sampler="DDPM", steps=40, seed=1, n_images=1)[1:-1]
    assert len(updates) == 10 and all(isinstance(live, np.ndarray) for live, *_ in updates)
    assert not any(np.array_equal(a[0], b[0]) for a, b in zip(updates, updates[1:]))  # the picture moves on


@pytest.mark.parametrize("kw,message", [
    (dict(steps=1001), "Steps must be between"), (dict(steps=0), "Steps must be between"),
    (dict(n_images=17), "Number of images must be between"), (dict(guidance=-1), "Guidance"),
    (dict(eta=2), "eta"), (dict(steps=1000, n_images=16), "too much work"), (dict(steps="x"), "number"),
    (dict(steps=51), "trained with 50 noise levels"), (dict(steps=2.5), "whole number"), (dict(sampler="Euler"), "Unknown sampler"),
    (dict(class_name="dog"), "Unknown class"), (dict(dataset="MNIST"), "Unknown dataset"),
    (dict(seed=float("nan")), "finite"), (dict(seed=-5), "Seed must be between 0 and 2147483647, got -5"),
    (dict(seed=2**31), "Seed must be between")])
def test_bad_settings_are_clear_errors(tab, kw, message):
    import gradio as gr
    with pytest.raises(gr.Error, match=message):
        _run(tab, **kw)


def test_work_limit_counts_the_second_pass_of_guidance(tab):
    """Guidance evaluates the U-Net on a doubled batch, so a guided request may do half the image-steps."""
    import gradio as gr
    tab.check_work(1000, 8, guided=False)
    tab.check_work(1000, 4, guided=True)
    with pytest.raises(gr.Error, match="with guidance"):
        tab.check_work(1000, 5, guided=True)
    with pytest.raises(gr.Error, match="too much work"):
        tab.check_work(1000, 9, guided=False)


def test_scrub_without_frames_and_classes_per_dataset(tab):
    import gradio as gr
    with pytest.raises(gr.Error, match="Generate a sample first"):
        tab.scrub([], 0)
    assert "dog" in tab.class_choices("CIFAR-10") and "sneaker" in tab.class_choices("Fashion-MNIST")
    assert tab.frame_indices(1000, 100) >= {0, 999} and len(tab.frame_indices(1000, 100)) == 100


def test_missing_weights_are_a_clear_error(monkeypatch, tmp_path):
    import gradio as gr
    from demos import diffusion as tab
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(weights, "_cache", {})
    with pytest.raises(gr.Error, match="Not trained yet"):
        _run(tab, steps=2, n_images=1)


# --------------------------------------------------------------------------- the released weights

@pytest.mark.parametrize("name,floor", [("ddpm-fashion", 0.8), ("ddpm-cifar10", 0.5)])
def test_released_model_draws_the_requested_classes(name, floor):
    """30 guided DDIM-20 samples (3 per class), judged by the separate evaluation classifier; the cards
    report the full measurement (1,000 DDIM-50 samples)."""
    dataset = name.removeprefix("ddpm-")
    if not (weights.available(name) and weights.available(f"evalnet-{dataset}")):
        pytest.skip(f"{name} or its evaluation classifier is not trained")
    from training import gen_eval
    from training.diffusion import generate
    model = weights.load(name)
    labels = torch.arange(30) % 10
    x = generate(model, "ddim", 20, labels, model.config.default_guidance, seed=0)
    assert x.shape == (30, model.config.in_channels, model.config.image_size, model.config.image_size)
    assert torch.isfinite(x).all() and x.abs().max() <= 1.0 and x.std() > 0.2  # images, not a flat field
    assert gen_eval.class_consistency(x, labels, gen_eval.load_evaluator(dataset)) >= floor


def test_old_gifs_are_deleted(tab, monkeypatch, tmp_path):
    monkeypatch.setattr(tab, "GIF_DIR", tmp_path / "gifs")
    first = _run(tab, steps=3, n_images=1)[-1][6]
    assert Path(first).parent == tmp_path / "gifs"
    second = _run(tab, steps=3, n_images=1)[-1][6]
    assert Path(first).exists() and Path(second).exists()  # a fresh GIF stays (Gradio copies it at once)
    monkeypatch.setattr(tab, "GIF_KEEP_S", -1)
    third = _run(tab, steps=3, n_images=1)[-1][6]
    assert sorted((tmp_path / "gifs").iterdir()) == [Path(third)]


# An intermediate step, not the last: at t_prev = -1 every sampler returns x0 whatever its coefficients.

def _an_intermediate_step(scheduler):
    scheduler.set_timesteps(50)
    return int(scheduler.timesteps[3]), int(scheduler.timesteps[4])


def test_ddim_intermediate_step_matches_the_closed_form():
    s = DDIMScheduler(1000, "linear", clip_sample=False)
    t, t_prev = _an_intermediate_step(s)
    g = torch.Generator().manual_seed(0)
    x_t, eps = torch.randn(200_000, generator=g), torch.randn(200_000, generator=g)
    a_t, a_prev = float(s.abar(t)), float(s.abar(t_prev))
    x0 = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    torch.testing.assert_close(s.step(eps, t, x_t, eta=0.0).prev_sample,
                               math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps, rtol=1e-4, atol=1e-4)
    sigma2 = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)  # eta = 1: DDPM's posterior variance
    mean = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma2) * eps
    noisy = s.step(eps, t, x_t, eta=1.0, generator=torch.Generator().manual_seed(1)).prev_sample
    assert float((noisy - mean).std()) == pytest.approx(math.sqrt(sigma2), rel=0.02)


def test_ddpm_intermediate_step_adds_noise_of_the_posterior_std():
    s = DDPMScheduler(1000, "linear", clip_sample=False)
    t, t_prev = _an_intermediate_step(s)
    x_t, eps = torch.zeros(200_000), torch.zeros(200_000)
    mean, var = s.posterior(s.predict_x0(x_t, eps, t), x_t, t, t_prev)
    out = s.step(eps, t, x_t, generator=torch.Generator().manual_seed(0)).prev_sample
    assert float((out - mean).std()) == pytest.approx(float(var) ** 0.5, rel=0.02)


def test_diffusion_tab_samples_the_chosen_class_with_its_settings(tab, monkeypatch):
    seen, real = [], tab.sample_steps
    monkeypatch.setattr(tab, "sample_steps",
                        lambda *a, **k: (seen.append((a[2], k["guidance"], k["eta"])), real(*a, **k))[1])
    list(tab.generate(class_name="sneaker", sampler="DDIM", steps=5, eta=0.5, guidance=2.0, n_images=2))
    labels, guidance, eta = seen[0]
    assert labels.tolist() == [7, 7] and (guidance, eta) == (2.0, 0.5)


# --------------------------------------------------------------------------- found a surviving mutation

def test_diffusion_work_limit_counts_one_pass_without_effective_guidance(monkeypatch):
    """Guidance 0 or 1, or no class, runs the U-Net once per image and step (guided_eps): only a guided class
    costs two passes."""
    from demos import diffusion as dtab
    from models.diffusion import UNet, UNetConfig
    from test_diffusion import TINY
    net = UNet(UNetConfig(**{**TINY, "num_classes": 10})).eval()
    monkeypatch.setattr(dtab, "load_model", lambda name: net)
    monkeypatch.setattr(dtab, "MAX_WORK", 200)  # 50 steps x 4 images: one pass fits, two do not
    kw = dict(dataset="Fashion-MNIST", sampler="DDIM", steps=50, n_images=4)
    with pytest.raises(gr.Error, match="with guidance"):
        next(dtab.generate(class_name="sneaker", guidance=3.0, **kw))
    for class_name, guidance in (("sneaker", 1.0), ("sneaker", 0.0), (dtab.UNCONDITIONAL, 3.0)):
        next(dtab.generate(class_name=class_name, guidance=guidance, **kw))  # the checks run before the first yield
