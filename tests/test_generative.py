"""VAE / DCGAN: the ELBO's math, shapes, fp16 round trip, the GAN loop's exact resume, the tab's functions
and its errors for bad input."""
import argparse
import math
import subprocess
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import weights
from demos import generative as tab
from models.generative import (DCGAN, VAE, DCGANConfig, VAEConfig, bernoulli_nll, gan_losses, gaussian_kl,
                               slerp)
from training import gan as gan_training
from training.vae import Images, elbo_report

ROOT = Path(__file__).resolve().parent.parent


def small_vae(latent_dim: int = 4, beta: float = 1.0) -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(latent_dim=latent_dim, beta=beta, width=8, hidden=32)).eval()


def small_gan(num_classes: int = 10) -> DCGAN:
    torch.manual_seed(0)
    return DCGAN(DCGANConfig(noise_dim=8, num_classes=num_classes, embed_dim=4, g_width=8, d_width=8)).eval()


# --------------------------------------------------------------------------- ELBO math

def test_gaussian_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, atol=1e-5)
    assert torch.allclose(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


def test_bernoulli_nll_is_pixel_sum_of_binary_cross_entropy():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]]])
    x = torch.tensor([[[[1.0, 0.0], [0.5, 1.0]]]])
    p = torch.sigmoid(logits)
    manual = -(x * p.log() + (1 - x) * (1 - p).log()).sum()
    assert torch.allclose(bernoulli_nll(logits, x), manual.view(1), atol=1e-5)
    assert math.isclose(float(bernoulli_nll(torch.zeros(1, 1, 28, 28), torch.ones(1, 1, 28, 28))),
                        784 * math.log(2), rel_tol=1e-5)


def test_elbo_is_recon_plus_beta_kl_and_gradients_reach_the_encoder():
    model = small_vae(beta=4.0).train()
    x = torch.rand(6, 1, 28, 28)
    torch.manual_seed(1)
    e = model.elbo(x)
    assert torch.allclose(e.loss, e.recon + 4.0 * e.kl)
    assert torch.allclose(e.neg_elbo, e.recon + e.kl)
    torch.manual_seed(1)
    assert torch.allclose(model.elbo(x, beta=1.0).loss, e.neg_elbo)  # same noise, beta overridden
    e.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.encoder.parameters())


def test_reparameterization_has_the_posterior_moments():
    mu, logvar = torch.tensor([[1.5, -2.0]]).expand(20000, 2), torch.tensor([[0.0, math.log(0.25)]]).expand(20000, 2)
    z = VAE.reparameterize(mu, logvar, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), torch.tensor([1.5, -2.0]), atol=0.03)
    assert torch.allclose(z.std(0), torch.tensor([1.0, 0.5]), atol=0.03)


def test_importance_weighted_bound_is_at_least_the_elbo():
    model = small_vae()
    x = (torch.rand(8, 1, 28, 28) > 0.7).float()
    g = torch.Generator().manual_seed(0)
    iw = model.log_likelihood(x, samples=256, generator=g).mean()
    with torch.no_grad():
        mu, logvar = model.encode(x)
        recon = torch.stack([bernoulli_nll(model.decode_logits(model.reparameterize(mu, logvar, g)), x)
                             for _ in range(64)]).mean(0)
        elbo = -(recon + gaussian_kl(mu, logvar)).mean()
    assert iw >= elbo - 0.05
    assert iw <= 0  # a log-probability of binary images


def test_elbo_report_fields_and_mse():
    model = small_vae()
    images = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    r = elbo_report(model, images, iw_samples=4, batch_size=7)
    assert math.isclose(r["neg_elbo"], r["recon_bce"] + r["kl"], rel_tol=1e-6)
    assert r["kl"] >= 0 and 0 <= r["recon_mse"] <= 1 and "nll_iw4" in r
    batch = Images(images, torch.arange(20)).collate([0, 3])
    assert batch[0].shape == (2, 1, 28, 28) and batch[0].dtype == torch.float32 and batch[0].max() <= 1


# --------------------------------------------------------------------------- shapes, GAN pieces

def test_vae_shapes_and_ranges():
    model = small_vae(latent_dim=2)
    x = torch.rand(3, 1, 28, 28)
    logits, mu, logvar = model(x)
    assert logits.shape == x.shape and mu.shape == logvar.shape == (3, 2)
    assert model.reconstruct(x).shape == x.shape
    s = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert s.shape == (5, 1, 28, 28) and 0 <= s.min() and s.max() <= 1
    assert torch.equal(s, model.sample(5, generator=torch.Generator().manual_seed(0)))


def test_dcgan_shapes_conditioning_and_losses():
    model = small_gan()
    z = model.noise(4, torch.Generator().manual_seed(0))
    a = model(z, torch.tensor([0, 0, 0, 0]))
    b = model(z, torch.tensor([7, 7, 7, 7]))
    assert a.shape == (4, 1, 28, 28) and 0 <= a.min() and a.max() <= 1
    assert not torch.allclose(a, b)  # the class changes the image
    emb = model.generator.embed(torch.tensor([0]))
    assert torch.allclose(model.generator.generate(z, emb.expand(4, -1)), a)
    assert model.discriminator(a, torch.tensor([0, 1, 2, 3])).shape == (4,)
    d_loss, g_loss = gan_losses(torch.zeros(3), torch.zeros(3))
    assert math.isclose(float(d_loss), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(float(g_loss), math.log(2), rel_tol=1e-6)
    unconditional = small_gan(num_classes=0)
    assert unconditional.sample(2).shape == (2, 1, 28, 28)


def test_slerp_endpoints_and_radius():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    assert torch.allclose(path.norm(dim=1), torch.full((5,), 3.0), atol=1e-4)
    assert torch.allclose(slerp(a, a, torch.tensor([0.5]))[0], a)


@pytest.mark.parametrize("kind", ["vae", "gan"])
def test_fp16_roundtrip(tmp_path, kind):
    model = small_vae() if kind == "vae" else small_gan()
    weights.save(model, tmp_path / kind)
    loaded = (VAE if kind == "vae" else DCGAN).from_pretrained(str(tmp_path / kind)).eval()
    assert loaded.config == model.config
    if kind == "vae":
        x = torch.rand(2, 1, 28, 28)
        ref, out = model.reconstruct(x), loaded.reconstruct(x)
    else:
        ref = model.sample(3, generator=torch.Generator().manual_seed(0))
        out = loaded.sample(3, generator=torch.Generator().manual_seed(0))
        y = torch.tensor([1, 2, 3])
        assert torch.allclose(model.discriminator(ref, y), loaded.discriminator(ref, y), atol=2e-2)
    assert (ref - out).abs().max() < 1e-2


# --------------------------------------------------------------------------- GAN loop: exact resume

def gan_args(out: Path, steps: int) -> argparse.Namespace:
    return argparse.Namespace(steps=steps, batch_size=8, lr_g=2e-4, lr_d=2e-4, noise_dim=8, g_width=8, d_width=8,
                              unconditional=False, ema=0.9, ema_start=1, eval_every=2, max_minutes=None, seed=0,
                              fresh=False, out=str(out), data=None, limit=None)


def test_gan_loop_resumes_exactly(tmp_path):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(40) % 10
    straight, _, steps = gan_training.run(gan_args(tmp_path / "a", 6), images, labels)
    assert steps == 6
    gan_training.run(gan_args(tmp_path / "b", 2), images, labels)
    resumed, history, steps = gan_training.run(gan_args(tmp_path / "b", 6), images, labels)
    assert steps == 6 and [h["step"] for h in history] == [2, 4, 6]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


# --------------------------------------------------------------------------- the tab

@pytest.fixture
def small_models(monkeypatch):
    models = {"vae-fashion": small_vae(16), "beta-vae-fashion": small_vae(2, beta=4.0), "gan-fashion": small_gan()}
    monkeypatch.setattr(tab, "load_model", lambda name: models[name])
    return models


def sketch_value(box=(80, 60, 200, 240)) -> dict:
    canvas = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).rectangle(box, fill=(0, 0, 0, 255))
    return {"background": None, "layers": [canvas], "composite": canvas}


def test_prepare_shrinks_large_uploads_first(monkeypatch):
    """Above WORK_SIDE the upload is shrunk before its ink is found (full-size float copies and index arrays
    of a 40-megapixel upload took over a gigabyte); the 28x28 result is about the same as without."""
    def garment(side: int, mode: str) -> Image.Image:
        image = Image.new(mode, (side, side), (255, 255, 255, 0) if mode == "RGBA" else "white")
        box = [side // 5 + 1, side // 9, side * 3 // 4 - 1, side * 7 // 8]
        ImageDraw.Draw(image).rectangle(box, fill=(90, 40, 40, 255) if mode == "RGBA" else "black")
        return image
    for mode in ("RGB", "RGBA"):
        small = tab.prepare(garment(512, mode), sketch=True)  # under WORK_SIDE: used as it is
        monkeypatch.setattr(tab, "WORK_SIDE", 128)
        large = tab.prepare(garment(512, mode), sketch=True)  # shrunk to 128 px first
        monkeypatch.undo()
        assert large.shape == small.shape == (1, 1, 28, 28)
        # the same garment, up to the edge pixels that anti-aliasing blurs
        assert (large - small).abs().mean() < 0.05 and abs(large.sum() - small.sum()) < 0.05 * small.sum()


def test_prepare_lays_images_out_like_fashion_mnist():
    x = tab.prepare(sketch_value((100, 40, 160, 240)), sketch=True)  # a tall bar of ink on a transparent canvas
    assert x.shape == (1, 1, 28, 28)
    rows, cols = (x[0, 0] > 0.5).nonzero(as_tuple=True)
    assert rows.min() == 0 and rows.max() == 27  # longest side scaled to 28
    assert abs((cols.min() + cols.max()) / 2 - 13.5) <= 1  # centered
    photo = Image.new("RGB", (300, 200), "white")  # dark object on white: inverted to light on black
    ImageDraw.Draw(photo).ellipse([50, 50, 250, 150], fill="black")
    y = tab.prepare(photo)
    assert y[0, 0, 14, 14] > 0.9 and y[0, 0, 0, 0] < 0.1
    dark = Image.new("L", (64, 64), 0)  # already light on black: kept
    ImageDraw.Draw(dark).rectangle([20, 10, 40, 50], fill=255)
    assert tab.prepare(dark)[0, 0, 14, 14] > 0.9


def test_uploads_keep_their_tone_and_odd_margins_go_above_and_left():
    """A transparent cutout is a garment on white (Fashion-MNIST inks 1 - grey), whatever its colour: it used to
    be drawn as a solid silhouette, or (Gradio's RGB conversion) on black and left uninverted. The odd leftover
    row of the 28x28 frame goes above, as in Fashion-MNIST, not below."""
    for grey in (30, 128, 230):
        cutout = Image.new("RGBA", (90, 60), (0, 0, 0, 0))
        ImageDraw.Draw(cutout).ellipse([5, 5, 84, 54], fill=(grey, grey, grey, 255))
        on_white = Image.new("RGB", (90, 60), "white")
        ImageDraw.Draw(on_white).ellipse([5, 5, 84, 54], fill=(grey, grey, grey))
        x, y = tab.prepare(cutout), tab.prepare(on_white)
        assert torch.allclose(x, y, atol=1 / 255) and float(x[0, 0, 14, 14]) == pytest.approx(1 - grey / 255, abs=0.02)
    rows = (tab.prepare(on_white)[0, 0] > 0.05).any(1).nonzero().flatten()
    top, bottom = int(rows.min()), 27 - int(rows.max())
    assert top + bottom > 0 and top - bottom in (0, 1)
    sketch = tab.prepare(sketch_value(), sketch=True)  # sketch strokes: ink is where alpha is
    assert float(sketch.max()) > 0.99


def test_reconstruction_elbo_is_the_same_on_every_click(small_models):
    assert tab.reconstruct(sketch_value(), None, "VAE")[2] == tab.reconstruct(sketch_value(), None, "VAE")[2]


def test_an_unconditional_dcgan_works_in_the_tab(small_models):
    small_models["gan-fashion"] = small_gan(num_classes=0)  # python -m training.gan --unconditional
    grid, note = tab.sample_grid("DCGAN", 1, 6, "sneaker")
    assert "unconditional" in note and grid.size[0] > grid.size[1]
    assert tab.interpolate("Two seeds", "DCGAN", 0, 1, 4, "sneaker", "bag").size[0] > 3 * tab.SIZE


def test_tab_functions(small_models, monkeypatch):
    gan, drawn = small_models["gan-fashion"], []
    real = gan.sample
    monkeypatch.setattr(gan, "sample", lambda n, labels=None, **k: (drawn.append(labels), real(n, labels, **k))[1])
    tab.sample_grid("DCGAN", 3, 4, "sneaker")
    assert drawn[-1].tolist() == [7] * 4  # the chosen class reaches the generator
    grid, note = tab.sample_grid("DCGAN", 3, 20, tab.ALL_CLASSES)
    assert drawn[-1].tolist() == [k % 10 for k in range(20)]
    assert grid.size[0] > grid.size[1] and "Columns cycle through the ten classes" in note
    cell = tab.SIZE * 3 + 2  # one class per column: 9 images are one row of 9, not 8 + a wrapped one
    grid, note = tab.sample_grid("DCGAN", 3, 9, tab.ALL_CLASSES)
    assert grid.size == (9 * cell + 2, cell + 2) and note.startswith("One image of each of the first 9 classes")
    assert tab.sample_grid("VAE", 3, 4)[0].size == tab.sample_grid("VAE", 3, 4)[0].size
    assert np.array_equal(np.asarray(tab.sample_grid("VAE", 3, 4)[0]), np.asarray(tab.sample_grid("VAE", 3, 4)[0]))
    seen, recon, notes = tab.reconstruct(sketch_value(), None, "VAE")
    assert seen.size == recon.size == (28 * tab.ZOOM,) * 2 and "Latent mean (16-d)" in notes and "nats" in notes
    strip = tab.interpolate("Two seeds", "DCGAN", 0, 1, 6, "sneaker", "bag")
    assert strip.size[0] > 5 * strip.size[1]
    strip = tab.interpolate("Two images", "beta-VAE (2-d latent)", 0, 1, 4, image_a=sketch_value(),
                            image_b=sketch_value((120, 20, 150, 260)))
    assert strip.size[0] > 3 * strip.size[1]
    assert tab.latent_map(7).size == (tab.MAP_PX, tab.MAP_PX)
    center, text = tab.decode_xy(tab.MAP_PX / 2, tab.MAP_PX / 2)
    assert text == "z = (+0.00, +0.00)" and center.size == (28 * tab.ZOOM,) * 2
    _, corner = tab.decode_xy(0, 0)  # top left: smallest z1, largest z2
    z1, z2 = (float(v) for v in corner[5:-1].split(","))
    assert z1 < -1.5 and z2 > 1.5


@pytest.mark.parametrize("call, message", [
    (lambda: tab.prepare(None), "Draw a garment"),
    (lambda: tab.prepare(sketch_value((0, 0, 0, 0)) | {"composite": Image.new("RGBA", (50, 50))}), "empty"),
    (lambda: tab.prepare(Image.new("RGB", (40, 40), "white")), "empty"),
    (lambda: tab.sample_grid("VAE", -1), "between"),
    (lambda: tab.sample_grid("VAE", 1.5), "whole number"),
    (lambda: tab.sample_grid("VAE", "abc"), "number"),
    (lambda: tab.sample_grid("VAE", 0, 1000), "between 1 and 64"),
    (lambda: tab.sample_grid("Diffusion"), "Unknown model"),
    (lambda: tab.sample_grid("DCGAN", 0, 4, "hat"), "Unknown class"),
    (lambda: tab.reconstruct(sketch_value(), None, "DCGAN"), "Unknown model"),
    (lambda: tab.interpolate("Two images", "DCGAN"), "no encoder"),
    (lambda: tab.interpolate("Two images", "VAE"), "Upload both"),
    (lambda: tab.interpolate("Sideways", "VAE"), "Unknown mode"),
    (lambda: tab.interpolate("Two seeds", "VAE", 0, 1, 100), "Frames"),
    (lambda: tab.latent_map(2), "Cells"),
    (lambda: tab.decode_xy(-5, 3), "outside"),
])
def test_bad_input_is_a_clear_error(small_models, call, message):
    with pytest.raises(gr.Error, match=message):
        call()


def test_missing_weights_are_a_ui_error(monkeypatch, tmp_path):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(weights, "_cache", {})
    monkeypatch.delenv(weights.HUB_ORG_ENV, raising=False)
    with pytest.raises(gr.Error, match="python -m training.vae"):
        tab.sample_grid("VAE", 0, 4)
    with pytest.raises(gr.Error, match="--beta 4 --latent-dim 2"):
        tab.latent_map(5)


def test_evaluate_cli_rejects_a_bad_folder(tmp_path):
    for module in ("training.vae", "training.gan"):
        r = subprocess.run([sys.executable, "-m", module, "evaluate", "--weights", str(tmp_path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr


def test_update_card_without_the_run_folder_is_a_cli_error(tmp_path):
    for module, folder in (("training.vae", "vae-fashion"), ("training.gan", "gan-fashion")):
        r = subprocess.run([sys.executable, "-m", module, "evaluate", "--weights", str(ROOT / "weights" / folder),
                            "--update-card", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "card.json not found" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- the shipped weights

@pytest.mark.parametrize("name", ["vae-fashion", "beta-vae-fashion", "gan-fashion"])
def test_shipped_weights_load_with_measured_cards(name):
    if not weights.available(name):
        pytest.skip(f"{name} not trained yet")
    model = weights.load(name)
    metrics = weights.card_metrics(name)
    assert metrics["fd_1000_samples"] > 0
    if name == "gan-fashion":
        assert model.sample(10).shape == (10, 1, 28, 28) and 0 <= metrics["class_consistency"] <= 1
    else:
        assert metrics["neg_elbo_nats"] > 0 and model.sample(3).shape == (3, 1, 28, 28)
    if name == "beta-vae-fashion":
        assert model.config.latent_dim == 2 and model.config.beta > 1


# --------------------------------------------------------------------------- found surviving mutations

@torch.no_grad()
def test_importance_weighted_estimate_is_exact_when_the_decoder_ignores_z():
    """Decoder independent of z: log p(x) = log p(x|.) exactly, and log mean_k p(z_k)/q(z_k|x) -> 0 for any q.
    With q = N(0, 0.8 I) != prior, a missing 1/K or a missing log-variance in log q shows up as log K or
    -D/2 log 0.8."""
    model = small_vae(latent_dim=4)
    model.decoder[0].weight.zero_()
    model.encoder[-1].weight.zero_()
    model.encoder[-1].bias.copy_(torch.tensor([0.0] * 4 + [math.log(0.8)] * 4))
    x = (torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    exact = -bernoulli_nll(model.decode_logits(torch.zeros(3, 4)), x)
    iw = model.log_likelihood(x, samples=3000, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(iw, exact, atol=0.05)


def test_two_image_interpolation_runs_from_image_a_to_image_b(small_models, monkeypatch):  # noqa: F811
    shown = []
    monkeypatch.setattr(tab, "tile", lambda images, n, **k: (shown.append(images), Image.new("L", (1, 1)))[1])
    a, b = sketch_value(), sketch_value((120, 20, 150, 260))
    tab.interpolate("Two images", "VAE", 0, 1, 5, image_a=a, image_b=b)
    vae = small_models["vae-fashion"]
    with torch.no_grad():
        first, last = (vae.decode(vae.encode(tab.prepare(v))[0])[0] for v in (a, b))
    assert torch.allclose(shown[0][0], first, atol=1e-5) and torch.allclose(shown[0][-1], last, atol=1e-5)


def test_dcgan_seed_interpolation_blends_class_a_into_class_b(small_models, monkeypatch):  # noqa: F811
    gen = small_models["gan-fashion"].generator
    embeddings, real = [], gen.generate
    monkeypatch.setattr(gen, "generate", lambda z, e=None: (embeddings.append(e), real(z, e))[1])
    tab.interpolate("Two seeds", "DCGAN", 0, 1, 4, "sneaker", "bag")
    e = embeddings[0]
    with torch.no_grad():
        sneaker, bag = gen.embed(torch.tensor([tab.CLASSES.index("sneaker"), tab.CLASSES.index("bag")]))
    assert torch.allclose(e[0], sneaker) and torch.allclose(e[-1], bag)
    assert torch.allclose(e[1], sneaker + (bag - sneaker) / 3, atol=1e-6)


def test_an_uploaded_image_is_reconstructed_instead_of_the_drawing(small_models):  # noqa: F811
    photo = Image.new("RGB", (120, 80), "white")
    ImageDraw.Draw(photo).ellipse([10, 10, 110, 70], fill="black")
    seen_upload = np.asarray(tab.reconstruct(sketch_value(), photo, "VAE")[0])
    assert np.array_equal(seen_upload, np.asarray(tab.to_pil(tab.prepare(photo)[0])))
    assert not np.array_equal(seen_upload, np.asarray(tab.reconstruct(sketch_value(), None, "VAE")[0]))
