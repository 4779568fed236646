"""CIFAR-10 classifiers: shapes, whitening, explanations, augmentation, export parity, CLI and the tab."""
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import weights
from demos import classify as tab
from demos.common import MAX_IMAGE_PIXELS, to_rgb
from models.classify import (CompactNet, CompactNetConfig, ResNet, ResNetConfig, ViT, ViTConfig,
                             attention_rollout, grad_cam, tta_logits)
from training.classify import (BATCH_MIXES, EXPORT_SUFFIXES, Augmented, Lookahead, accuracy_report, build_model,
                              export, fit_input, load_folder, parse_model_config, predict, read_folder, run_exported)

ROOT = Path(__file__).resolve().parent.parent
EXPORT_ATOL = 1e-4  # max |logit difference| allowed between PyTorch and onnxruntime / torch.export / TorchScript (fp32)


def small(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "compact":
        return CompactNet(CompactNetConfig(widths=[8, 16, 16])).eval()
    if kind == "resnet":
        return ResNet(ResNetConfig(depth=18, width=8)).eval()
    return ViT(ViTConfig(dim=32, depth=2, heads=4, mlp_ratio=2.0)).eval()


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Give BatchNorm non-trivial running statistics (and ResNet's zero-initialized BNs a scale), so that
    tests of eval-mode behaviour exercise them."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            with torch.no_grad():
                m.weight.fill_(1.0)
    return model.eval()


@pytest.mark.parametrize("kind", ["compact", "resnet", "vit"])
def test_logits_shape_and_batch_independence(kind):
    model = trained_like(small(kind))
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (3, 10) and torch.isfinite(out).all()
        assert torch.allclose(model(x[:1]), out[:1], atol=1e-5)  # eval mode: no batch statistics
    assert model.classes[0] == "airplane" and len(model.classes) == 10


def test_resnet_depths_and_parameter_counts():
    r18 = ResNet(ResNetConfig(depth=18))
    r34 = ResNet(ResNetConfig(depth=34))
    n18 = sum(p.numel() for p in r18.parameters())
    n34 = sum(p.numel() for p in r34.parameters())
    assert 11.0e6 < n18 < 11.4e6  # kuangliu's CIFAR ResNet-18: 11.17M
    assert 21.0e6 < n34 < 21.5e6  # ResNet-34: 21.28M
    with pytest.raises(ValueError):
        ResNet(ResNetConfig(depth=50))


def test_model_config_overrides_from_the_command_line():
    cfg = parse_model_config(["dim=192", "depth=6", "mlp_ratio=2.0", "widths=[16,32,64]"])
    assert cfg == {"dim": 192, "depth": 6, "mlp_ratio": 2.0, "widths": [16, 32, 64]}
    vit = build_model("vit", {k: cfg[k] for k in ("dim", "depth", "mlp_ratio")})
    assert (vit.config.dim, len(vit.blocks), vit.config.heads) == (192, 6, ViTConfig().heads)
    assert build_model("resnet34", {"width": 16}).config.depth == 34
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_model_config(["dim"])
    with pytest.raises(ValueError, match="no_such_field"):
        build_model("resnet18", {"no_such_field": 1})


@pytest.mark.parametrize("kind", ["compact", "resnet18", "vit"])
def test_a_model_built_with_its_defaults_saves_every_config_field(kind, tmp_path):
    model = build_model(kind)  # no overrides: an empty config dict once made save() write no config.json
    weights.save(model, tmp_path / kind)
    saved = json.loads((tmp_path / kind / "config.json").read_text())
    assert saved == json.loads(json.dumps(asdict(model.config)))
    assert load_folder(tmp_path / kind).config == model.config


def test_whitening_decorrelates_patches():
    torch.manual_seed(0)
    model = CompactNet(CompactNetConfig(widths=[8, 8, 8]))
    base = torch.rand(64, 3, 8, 8)
    images = torch.nn.functional.interpolate(base, size=32, mode="bilinear")  # strongly correlated pixels
    model.init_whitening(images, eps=0.0)
    with torch.no_grad():
        out = model.whiten(model.normalize(images)) - model.whiten.bias.view(1, -1, 1, 1)
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    cov = torch.cov(half.T)
    assert torch.allclose(cov, torch.eye(12), atol=0.05)
    assert not model.whiten.weight.requires_grad


@pytest.mark.parametrize("kind", ["compact", "resnet"])
def test_grad_cam_shape_range_and_target(kind):
    model = trained_like(small(kind))
    x = torch.rand(1, 3, 32, 32)
    cam, logits = grad_cam(model, x)
    assert cam.shape == (32, 32) and logits.shape == (10,)
    assert float(cam.min()) >= 0 and float(cam.max()) <= 1
    cams = [grad_cam(model, x, target=k)[0] for k in range(10)]
    assert all(c.shape == (32, 32) for c in cams)
    assert any(not torch.allclose(cams[0], c) for c in cams[1:])  # the map follows the class asked for
    assert all(p.grad is None for p in model.parameters())  # leaves the model clean


def test_attention_rollout_shape_and_model_unchanged():
    model = small("vit")
    x = torch.rand(1, 3, 32, 32)
    cam, logits = attention_rollout(model, x)
    assert cam.shape == (32, 32) and float(cam.min()) >= 0 and float(cam.max()) <= 1
    with torch.no_grad():
        assert torch.allclose(logits, model(x)[0], atol=1e-5)  # explicit attention = the SDPA path
    assert all(not b.attn.record and b.attn.last_attention is None for b in model.blocks)
    # Abnar & Zuidema: the product, later layers on the left, of 0.5 * head-mean attention + 0.5 * identity
    for b in model.blocks:
        b.attn.record = True
    with torch.no_grad():
        model(x)
    rollout = torch.eye(model.grid ** 2 + 1)
    for b in model.blocks:
        rollout = (0.5 * b.attn.last_attention[0].mean(0) + 0.5 * torch.eye(len(rollout))) @ rollout
        b.attn.record, b.attn.last_attention = False, None
    want = F.interpolate(rollout[0, 1:].reshape(1, 1, model.grid, model.grid), size=(32, 32), mode="bilinear",
                         align_corners=False)[0, 0]
    torch.testing.assert_close(cam, (want - want.min()) / (want.max() - want.min()), rtol=1e-4, atol=1e-5)


def test_augmentation_flips_and_translates_batchwise():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(64) % 10
    flip_only = Augmented(images, labels, translate=0)
    x, y = flip_only.collate(list(range(64)))
    assert x.dtype == torch.uint8 and x.shape == (64, 3, 32, 32) and torch.equal(y, labels)
    same = (x == images).flatten(1).all(1)
    flipped = (x == images.flip(3)).flatten(1).all(1)
    assert (same | flipped).all() and same.any() and flipped.any()
    shifted = Augmented(images, labels, translate=2, flip="none")
    x, _ = shifted.collate(list(range(64)))
    # the center 28x28 of every output is the original shifted by at most 2 pixels
    for i in range(8):
        hits = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                if torch.equal(x[i, :, 2:30, 2:30], images[i, :, 2 + dy:30 + dy, 2 + dx:30 + dx])]
        assert hits


def test_alternating_flip_mirrors_each_image_every_other_time_it_is_served():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    data = Augmented(images, torch.zeros(32, dtype=torch.long), translate=0, flip="alternate")
    seen = []
    for _ in range(4):  # four epochs, served in a different order each time
        order = torch.randperm(32)
        x, _ = data.collate(order.tolist())
        flipped = torch.empty(32, dtype=torch.bool)
        flipped[order] = (x == images[order].flip(3)).flatten(1).all(1)
        seen.append(flipped)
    assert 0 < int(seen[0].sum()) < 32  # a random subset first
    for a, b in zip(seen, seen[1:]):
        assert torch.equal(b, ~a)  # then every image alternates
    with pytest.raises(ValueError, match="flip must be one of"):
        Augmented(images, torch.zeros(32, dtype=torch.long), flip="sometimes")


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment", "trivialaugment"])
def test_augmentation_policy_draws_its_operations_per_image_and_follows_the_seed(policy):
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images, labels = image.repeat(64, 1, 1, 1), torch.arange(64) % 10  # 64 copies of one image
    data = Augmented(images, labels, translate=0, flip="none", augment=policy)
    torch.manual_seed(1)
    x, y = data.collate(list(range(64)))
    assert x.dtype == torch.uint8 and x.shape == images.shape and torch.equal(y, labels)
    assert len({out.numpy().tobytes() for out in x}) > 10  # the copies come out different: drawn per image
    torch.manual_seed(1)
    assert torch.equal(data.collate(list(range(64)))[0], x)
    with pytest.raises(ValueError, match="augment must be one of"):
        Augmented(images, labels, augment="mixup")


@pytest.mark.parametrize("mix", ["cutmix", "mixup"])
def test_batch_mix_blends_neighbours_and_their_labels_in_the_same_proportion(mix):
    torch.manual_seed(0)
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8)  # every image its own class
    mixed, target = BATCH_MIXES[mix](10)(x, y)
    assert mixed.shape == x.shape and target.shape == (8, 10)
    assert torch.allclose(target.sum(1), torch.ones(8))
    own = target[torch.arange(8), y]  # the share of each image's own label; the rest is its neighbour's
    assert torch.allclose(own + target[torch.arange(8), y.roll(1)], torch.ones(8))
    assert 0 < own[0] < 1
    if mix == "mixup":  # pixels blended in the same proportion as the labels
        assert torch.allclose(mixed, own.view(-1, 1, 1, 1) * x + (1 - own.view(-1, 1, 1, 1)) * x.roll(1, 0))
    else:  # a box pasted from the neighbour, whose area is the neighbour's share
        from_neighbour = (mixed == x.roll(1, 0)).all(1).float().mean((1, 2))
        assert torch.allclose(from_neighbour, 1 - own, atol=1e-6)
    assert BATCH_MIXES["none"](10) is None


def test_lookahead_pulls_toward_the_slow_weights_and_ends_on_them():
    model = torch.nn.Linear(3, 2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    lookahead = Lookahead(model, total_steps=10, every=5)
    with torch.no_grad():
        model.weight.add_(1.0)
    lookahead(3)  # not a lookahead step: nothing changes
    assert torch.allclose(model.weight, start["weight"] + 1)
    lookahead(5)  # decay 0.95^5 * (5/10)^3 ~ 0.097 toward the slow copy (the initial weights)
    decay = 0.95 ** 5 * 0.5 ** 3
    assert torch.allclose(model.weight, start["weight"] + (1 - decay))
    snapshot = model.weight.clone()
    with torch.no_grad():
        model.weight.add_(5.0)
    lookahead(10)  # the last step: the weights become the slow copy, the last 5 steps' moves dropped
    assert torch.allclose(model.weight, snapshot)
    # resumed: the slow copy starts from the weights the run resumes with, not from the initial ones
    resumed = torch.nn.Linear(3, 2)
    lookahead = Lookahead(resumed, total_steps=10, every=5, resumed=True)
    with torch.no_grad():  # fit() loads the checkpoint after the Lookahead was built
        resumed.weight.copy_(snapshot)
    lookahead(9)
    assert torch.allclose(resumed.weight, snapshot)
    lookahead(10)
    assert torch.allclose(resumed.weight, snapshot)  # it used to be pulled back toward the random init


def test_predict_tta_and_accuracy_report():
    model = trained_like(small("compact"))
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    for tta in (0, 1, 2, 3):
        assert predict(model, images, tta=tta, batch_size=7).shape == (20, 10)
    # level 3 is the plain mean of the 18 shifted / mirrored views
    x = F.pad(images.float().div(255), (1,) * 4, mode="reflect")
    views = [x[..., dy:dy + 32, dx:dx + 32] for dy in range(3) for dx in range(3)]
    with torch.no_grad():
        expected = sum(model(v) + model(v.flip(3)) for v in views) / 18
        plain, flip = model(views[4]), model(views[4].flip(3))  # views[4]: the unshifted image
        shifts = sum(model(v) + model(v.flip(3)) for v in (views[0], views[8])) / 4  # the two diagonal shifts
    assert torch.allclose(predict(model, images, tta=3, batch_size=7), expected, atol=1e-4)
    # level 1 averages the image and its mirror; level 2 gives that half the weight, the diagonal shifts the rest
    assert torch.allclose(predict(model, images, tta=1, batch_size=7), (plain + flip) / 2, atol=1e-4)
    assert torch.allclose(predict(model, images, tta=2, batch_size=7), (plain + flip) / 4 + shifts / 2, atol=1e-4)
    logits = torch.eye(10)[[0, 1, 2, 2]]
    report = accuracy_report(logits, torch.tensor([0, 1, 2, 3]), [str(i) for i in range(10)])
    assert report["accuracy"] == 0.75 and report["per_class_accuracy"] == {"0": 1.0, "1": 1.0, "2": 1.0, "3": 0.0}


@pytest.mark.parametrize("fmt", ["torchscript", "onnx", "pt2"])
@pytest.mark.parametrize("kind", ["compact", "resnet", "vit"])
def test_export_matches_pytorch(tmp_path, kind, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    model = trained_like(small(kind)).to(memory_format=torch.channels_last)
    path = export(model, tmp_path / f"m{EXPORT_SUFFIXES[fmt]}", fmt)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)  # the model is left as it was
    for batch in (1, 5):  # batch sizes other than the one traced with
        x = torch.rand(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model(x)
        assert (run_exported(path, x) - expected).abs().max() < EXPORT_ATOL


@pytest.mark.parametrize("wide", [True, False])
def test_fit_input_crops_the_longer_side_halfway(wide):
    # a 256x64 ramp whose value is the x coordinate: fit_input keeps x in [48, 208) (the longer side cropped from
    # 256 halfway to 64, i.e. to 160), so the 32 output columns sample 50.5, 55.5, ..., 205.5 (bicubic is exact
    # on a ramp); a square crop would keep 96..160, squashing 0..256
    ramp = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    image = Image.fromarray(np.stack([ramp] * 3, -1) if wide else np.stack([ramp.T] * 3, -1))
    out = np.asarray(fit_input(image), dtype=np.float64)[..., 0]
    profile = out[16] if wide else out[:, 16]
    assert out.shape == (32, 32)
    assert np.abs(profile - (48 + 5 * (np.arange(32) + 0.5))).max() < 1.5
    small_image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(fit_input(small_image)), np.asarray(small_image))  # CIFAR-sized: untouched


def test_evaluate_sees_photos_as_the_tab_does(tmp_path):
    (tmp_path / "horse").mkdir()
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 255, (90, 160, 3), dtype=np.uint8))
    photo.save(tmp_path / "horse" / "a.png")
    images, _ = read_folder(tmp_path)
    _, x = tab.prepare(str(tmp_path / "horse" / "a.png"))
    assert torch.equal(images[0], (x[0] * 255).round().to(torch.uint8))


def test_read_folder_any_size_and_mode(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "ship").mkdir()
    Image.new("RGB", (100, 60), (200, 10, 10)).save(tmp_path / "cat" / "a.jpg")
    Image.new("L", (8, 8), 128).save(tmp_path / "cat" / "b.png")
    Image.new("RGBA", (32, 32), (0, 0, 255, 128)).save(tmp_path / "ship" / "c.png")
    (tmp_path / "ship" / "notes.txt").write_text("not an image")
    images, labels = read_folder(tmp_path)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [3, 3, 8]  # CIFAR-10 indices, not ImageFolder's alphabetical ones
    (tmp_path / "zebra").mkdir()
    with pytest.raises(ValueError, match="zebra"):
        read_folder(tmp_path)


def fake_voc(root: Path, images: dict[str, list[tuple[str, tuple[int, int, int, int], str]]]) -> None:
    """A VOC2007 trainval tree of 200x100 images: {id: [(class, (xmin, ymin, xmax, ymax) 1-based, flags)]}."""
    voc = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    for stem, objects in images.items():
        Image.new("RGB", (200, 100), (90, 120, 200)).save(voc / "JPEGImages" / f"{stem}.jpg")
        xml = "".join(f"<object><name>{name}</name><truncated>{int('t' in flags)}</truncated>"
                      f"<difficult>{int('d' in flags)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                      f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for name, b, flags in objects)
        (voc / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>200</width><height>100</height>"
            f"<depth>3</depth></size>{xml}</annotation>")
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(images) + "\n")


def test_voc_photos_cli(tmp_path):
    from training.photos import MARKER
    fake_voc(tmp_path, {
        "000001": [("cat", (21, 11, 120, 90), "")],                          # a photo and an object
        "000002": [("car", (11, 11, 70, 50), ""), ("person", (100, 1, 140, 99), "")],  # two objects: no photo
        "000003": [("dog", (1, 1, 150, 100), "d")],                          # difficult: neither
        "000004": [("boat", (1, 1, 200, 80), "t")],                          # truncated: a photo, no object
        "000005": [("bird", (1, 1, 20, 20), "")],                            # small: neither
    })
    out = tmp_path / "out"
    run = [sys.executable, "-m", "training.photos", "--out", str(out), "--data", str(tmp_path)]
    result = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["photos"] == {"total": 2, "cat": 1, "ship": 1}
    assert report["objects"] == {"total": 2, "automobile": 1, "cat": 1}
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*") if p.name != MARKER) == [
        "objects/automobile/000002_0.png", "objects/cat/000001_0.png",
        "photos/cat/000001.jpg", "photos/ship/000004.jpg"]
    # the cat's box is x 20..120, y 10..90 (0-based); with a 10% margin each side, 120 x 96 pixels
    assert Image.open(out / "objects" / "cat" / "000001_0.png").size == (120, 96)
    _, labels = read_folder(out / "photos")
    assert labels.tolist() == [3, 8]  # cat, ship: readable by ``training.classify evaluate --data``
    bad = subprocess.run(run + ["--margin", "-1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--margin" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run(run[:-1] + [str(tmp_path / "nowhere")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no VOC2007 'trainval' split" in bad.stderr and "Traceback" not in bad.stderr
    # a corrupt annotation: one line, and the earlier run's trees stay whole (they used to be deleted first)
    (tmp_path / "VOCdevkit" / "VOC2007" / "Annotations" / "000005.xml").write_text("<annotation><object>")
    bad = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "ParseError" in bad.stderr and "Traceback" not in bad.stderr
    assert (out / "photos" / "cat" / "000001.jpg").is_file() and not list(out.glob(".building-*"))
    # a folder of the user's own at out/photos is never replaced
    mine = tmp_path / "mine"
    (mine / "photos").mkdir(parents=True)
    (mine / "photos" / "holiday.txt").write_text("precious")
    bad = subprocess.run(run[:4] + [str(mine)] + run[5:], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not written by training.photos" in bad.stderr
    assert (mine / "photos" / "holiday.txt").read_text() == "precious"


def test_evaluate_and_export_cli(tmp_path):
    model = trained_like(small("compact"))
    weights.save(model, tmp_path / "w")
    data = tmp_path / "data"
    for c in ("frog", "truck"):
        (data / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                data / c / f"{i}.png")
    run = lambda *a: subprocess.run([sys.executable, "-m", "training.classify", *a], cwd=ROOT,
                                    capture_output=True, text=True, timeout=300)
    r = run("evaluate", "--weights", str(tmp_path / "w"), "--data", str(data), "--threads", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["n"] == 4 and 0 <= out["accuracy"] <= 1 and set(out["per_class_accuracy"]) == {"frog", "truck"}
    r = run("evaluate", "--weights", str(tmp_path / "missing"), "--data", str(data))
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr
    r = run("evaluate", "--weights", str(tmp_path / "w"), "--data", str(data), "--frame", str(tmp_path / "w"))
    assert r.returncode == 2 and "is not a detector's weights folder" in r.stderr and "Traceback" not in r.stderr
    r = run("export", "--weights", str(tmp_path / "w"), "--format", "pt2", "--out", str(tmp_path / "m.pt2"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["max_abs_diff"] < EXPORT_ATOL
    r = run("export", "--weights", str(tmp_path / "w"), "--format", "pt2", "--out", str(tmp_path / "m.onnx"))
    assert r.returncode == 2 and "writes a .pt2 file" in r.stderr and "Traceback" not in r.stderr
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    r = run("export", "--weights", str(tmp_path / "w"), "--format", "onnx", "--out", str(tmp_path / "m.onnx"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["max_abs_diff"] < EXPORT_ATOL


def tiny_cifar_tree(root: Path) -> None:
    """A CIFAR-10-layout ImageFolder tree (train/ and test/, two classes) of random 32x32 images."""
    for split, n in (("train", 6), ("test", 2)):
        for c in ("frog", "truck"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png")


@pytest.mark.parametrize("distillation", ["hard", "soft"])
def test_train_init_continues_from_a_weights_folder(tmp_path, monkeypatch, distillation):
    """``--init``: a second schedule starts from a released folder (its config, its weights), distilled from two
    teachers either way, and a folder of another model kind is a CLI error. Runs ``main`` in-process on a tiny
    ImageFolder tree."""
    import training.classify as tc
    monkeypatch.setattr(tc, "CACHE", tmp_path / "cache")
    tiny_cifar_tree(tmp_path / "data")
    start = trained_like(small("compact"))
    weights.save(start, tmp_path / "start")
    common = ["--data", str(tmp_path / "data"), "--init", str(tmp_path / "start"), "--epochs", "2",
              "--batch-size", "4", "--val-size", "4", "--no-bf16", "--fresh",
              "--augment", "autoaugment", "--mix", "cutmix-or-mixup", "--teacher", str(tmp_path / "start"),
              str(tmp_path / "start"), "--distillation", distillation, "--out", str(tmp_path / "ckpt"),
              "--weights-out", str(tmp_path / "w")]
    monkeypatch.setattr(sys, "argv", ["training.classify", "--model", "compact", *common])
    tc.main()
    trained = tc.load_folder(tmp_path / "w")
    assert trained.config == start.config  # widths [8, 16, 16] from the folder, not the recipe's
    assert any(not torch.allclose(a.float(), b.float()) for a, b in zip(trained.parameters(), start.parameters()))
    card = (tmp_path / "w" / "README.md").read_text()
    assert "Started from the weights in" in card and "translate + autoaugment + cutmix-or-mixup" in card
    assert f"Distilled from `{tmp_path / 'start'}` + `{tmp_path / 'start'}`" in card
    assert f"{distillation} distillation" in card
    for wrong in (["--model", "vit"], ["--model", "compact", "--widths", "8", "16", "32"]):
        monkeypatch.setattr(sys, "argv", ["training.classify", *wrong, *common])
        with pytest.raises(SystemExit) as exit_info:
            tc.main()
        assert exit_info.value.code == 2


def test_average_writes_the_mean_of_the_members_and_refuses_what_cannot_be_averaged(tmp_path, monkeypatch, capsys):
    """``average``: the uniform soup of weights folders and training checkpoints (a torch.compile'd one too) is the
    mean of their weights; ``--greedy`` starts from the best member on validation; BatchNorm nets and mismatched
    architectures are CLI errors."""
    import training.classify as tc
    from training.loop import atomic_save
    monkeypatch.setattr(tc, "CACHE", tmp_path / "cache")
    tiny_cifar_tree(tmp_path / "data")
    members = []
    for seed in range(3):
        model = small("vit")
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        weights.save(model, tmp_path / f"w{seed}")
        members.append(ViT.from_pretrained(str(tmp_path / f"w{seed}")).state_dict())  # as stored (fp16)
    atomic_save({"model": {f"_orig_mod.{k}": v for k, v in members[2].items()}, "step": 1}, tmp_path / "best.pt")
    sources = [str(tmp_path / "w0"), str(tmp_path / "w1"), str(tmp_path / "best.pt")]

    def average(*extra):
        monkeypatch.setattr(sys, "argv", ["training.classify", "average", "--data", str(tmp_path / "data"),
                                          "--val-size", "4", "--weights", *extra])
        tc.main()
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    out = average(*sources, "--out", str(tmp_path / "soup"))
    assert out["chosen"] == sources and 0 <= out["accuracy"] <= 1 and 0 <= out["val_accuracy"] <= 1
    soup = tc.load_folder(tmp_path / "soup").state_dict()
    for k, v in soup.items():
        torch.testing.assert_close(v, sum(m[k] for m in members) / 3, atol=2e-3, rtol=2e-3)  # stored as fp16
    card = (tmp_path / "soup" / "README.md").read_text()
    assert "weight soup" in card and "average --data" in card and f"`{sources[2]}`" in card

    out = average(*sources, "--greedy", "--out", str(tmp_path / "greedy"))
    assert out["chosen"][0] == max(out["members"], key=out["members"].get)
    assert set(out["chosen"]) <= set(sources)

    weights.save(trained_like(small("compact")), tmp_path / "compact")
    other = ViT(ViTConfig(dim=32, depth=3, heads=4, mlp_ratio=2.0))
    weights.save(other, tmp_path / "deeper")
    for wrong in ([str(tmp_path / "compact"), str(tmp_path / "compact")], [sources[0], str(tmp_path / "deeper")],
                  [str(tmp_path / "deeper"), sources[2]], [sources[0]]):
        with pytest.raises(SystemExit) as exit_info:
            average(*wrong, "--out", str(tmp_path / "bad"))
        assert exit_info.value.code == 2
    assert not (tmp_path / "bad").exists()


def test_weights_roundtrip_fp16(tmp_path):
    model = trained_like(small("vit"))
    weights.save(model, tmp_path)
    loaded = ViT.from_pretrained(str(tmp_path)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() < 0.05


# --------------------------------------------------------------------------- the tab

@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "CMYK", "I;16", "LA", "1"])
def test_prepare_any_mode(mode):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).convert(
        "RGB" if mode == "I;16" else mode)
    if mode == "I;16":
        image = Image.fromarray(np.random.default_rng(0).integers(0, 65535, (50, 70), dtype=np.uint16))
    small_image, x = tab.prepare(image)
    assert small_image.size == (32, 32) and small_image.mode == "RGB"
    assert x.shape == (1, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1


def test_prepare_rejects_non_images(tmp_path):
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"this is text")
    with pytest.raises(gr.Error):
        tab.prepare(str(bad))
    with pytest.raises(gr.Error):
        tab.prepare(None)


def test_examples_are_bundled():
    paths = tab.example_paths()
    assert len(paths) >= 4
    modes = {Image.open(p).mode for p in paths}
    assert len(modes) >= 3  # RGB plus others the tab must convert
    assert any(Image.open(p).width != Image.open(p).height for p in paths)  # a real photo, not square


@pytest.fixture
def random_zoo(tmp_path, monkeypatch):
    """The registry pointed at tmp_path holding randomly initialized compact and ViT models (no ResNet)."""
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(weights, "_cache", {})
    monkeypatch.delenv(weights.HUB_ORG_ENV, raising=False)
    weights.save(trained_like(small("compact")), tmp_path / "compact-cifar10")
    weights.save(small("vit"), tmp_path / "vit-cifar10")
    return tmp_path


def test_tab_concurrent_requests_get_their_own_explanations(random_zoo):
    """Grad-CAM and attention rollout keep per-call state on the shared model (found by test_load:
    concurrent ViT requests failed with "'NoneType' object is not subscriptable")."""
    from concurrent.futures import ThreadPoolExecutor
    paths = tab.example_paths()[:2]
    expected = {p: tab.classify(p, tab.COMPARE) for p in paths}
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: (p, tab.classify(p, tab.COMPARE)), paths * 6))
    for p, out in results:
        for got, want in zip(out[1:-1], expected[p][1:-1]):
            if isinstance(want, dict):
                assert got.keys() == want.keys()
            elif want is not None:
                assert np.array_equal(np.asarray(got), np.asarray(want))


def test_tab_compare_all_skips_missing_models(random_zoo):
    out = tab.classify(tab.example_paths()[0], tab.COMPARE)
    preview, compact_label, compact_heat, resnet_label, resnet_heat, vit_label, vit_heat, notes = out
    assert preview.size == (tab.VIEW_SIZE, tab.VIEW_SIZE)
    for label, heat in ((compact_label, compact_heat), (vit_label, vit_heat)):
        assert len(label) == 5 and 0 < sum(label.values()) <= 1 + 1e-6 and heat.size == (tab.VIEW_SIZE,) * 2
    assert resnet_label is None and resnet_heat is None
    assert "ResNet-18" in notes and "python -m training.classify" in notes
    assert "Not framed (the detector is unavailable" in notes  # no yolo-voc in this zoo: the whole photo


def test_tab_single_model(random_zoo):
    out = tab.classify(tab.example_paths()[1], "Compact net")
    # a changed setting re-classifies the photo shown; a removed photo clears every output
    changed = tab.on_change(tab.example_paths()[1], "Compact net")
    assert changed[1] == out[1] and changed[3] is None and changed[-1] == out[-1]
    assert tab.on_change(None, "ViT") == [None] * 7 + [""]
    # the top 5 of the softmax of the test-time-augmented logits, unscaled
    model = weights.load("compact-cifar10")
    with torch.no_grad():
        probs = tta_logits(model, tab.prepare(tab.example_paths()[1])[1], tab.TTA["compact-cifar10"]).softmax(-1)[0]
    top = probs.topk(5)
    assert tab.classify(tab.example_paths()[1], "Compact net", False)[1] == pytest.approx(
        {model.classes[i]: p for p, i in zip(top.values.tolist(), top.indices.tolist())}, abs=1e-6)
    assert out[1] is not None and out[3] is None and out[5] is None
    with pytest.raises(gr.Error, match="Not trained yet"):
        tab.classify(tab.example_paths()[1], "ResNet-18")
    with pytest.raises(gr.Error):
        tab.classify(tab.example_paths()[1], "AlexNet")


def test_tab_corrupt_weights_is_a_clear_error(random_zoo):
    (random_zoo / "compact-cifar10" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(gr.Error, match="could not load"):
        tab.classify(tab.example_paths()[0], "Compact net")
    # compared, the corrupt model is a note and the others still answer; a corrupt detector only skips framing
    (random_zoo / "yolo-voc").mkdir()
    for f in ("config.json", "model.safetensors"):
        (random_zoo / "yolo-voc" / f).write_bytes(b"garbage")
    out = tab.classify(tab.example_paths()[0], tab.COMPARE)
    assert out[1] is None and out[5] is not None and out[6] is not None
    assert "**Compact net**: compact-cifar10: could not load" in out[-1]
    assert "Not framed (the detector is unavailable: yolo-voc: could not load" in out[-1]
    with pytest.raises(gr.Error, match="frame must be true or false"):
        tab.classify(tab.example_paths()[0], "ViT", "false")


def test_tab_grad_cam_explains_the_class_it_shows(random_zoo, monkeypatch):
    import demos.classify
    targets = []
    real = demos.classify.explain
    monkeypatch.setattr(demos.classify, "explain", lambda model, x, target=None: (targets.append(target),
                                                                                  real(model, x, target))[1])
    out = tab.classify(tab.example_paths()[0], "Compact net", False)
    model = weights.load("compact-cifar10")
    with torch.no_grad():
        shown = int(tab.tta_logits(model, tab.prepare(tab.example_paths()[0])[1], tab.TTA["compact-cifar10"]).argmax())
    assert targets == [shown] and max(out[1], key=out[1].get) == model.classes[shown]


@pytest.mark.parametrize("mode,pixels,grey", [("I;16", 65535, 255), ("I;16", 1100, 4), ("I", 65535, 255),
                                              ("I", 200, 200), ("F", 0.5, 128), ("F", float("nan"), 0)])
def test_deep_grey_images_are_scaled_not_stretched(mode, pixels, grey):
    """White stays white and a dark photo dark (the tab used to stretch each image to its own min and max)."""
    from demos.common import to_rgb
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    array = np.full((6, 5), pixels, dtype)
    image = Image.fromarray(array, "I;16") if mode == "I;16" else Image.fromarray(array)
    assert image.mode == mode
    assert np.asarray(to_rgb(image)).tolist() == np.full((6, 5, 3), grey).tolist()


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_deep_grey_conversion_in_chunks_matches_whole(mode):
    """_to_uint8 works through a few pixels at a time (a 40-megapixel 16-bit upload took 1 GB as float64);
    chunks that split rows, the maximum found in a later chunk and non-finite pixels give the same result."""
    from demos.common import _to_uint8
    rng = np.random.default_rng(0)
    if mode == "F":
        array = rng.random((7, 9), dtype=np.float32) * 0.9
        array[0, 0], array[6, 8], array[3, 3] = np.nan, np.inf, 1.0
    else:
        array = rng.integers(0, 250, (7, 9)).astype(np.uint16 if mode == "I;16" else np.int32)
        array[6, 8] = 60000  # only the last chunk tells that this is 16-bit-scale data
    image = Image.fromarray(array, "I;16") if mode == "I;16" else Image.fromarray(array)
    whole, chunked = _to_uint8(image), _to_uint8(image, chunk=5)
    assert whole.shape == (7, 9) and whole.dtype == np.uint8 and np.array_equal(whole, chunked)
    assert whole[6, 8] == (233 if mode != "F" else 255) and (mode != "F" or whole[0, 0] == 0)


SHIPPED = [("Compact net", "compact", 0.8), ("ResNet-18", "resnet18", 0.85), ("ViT", "vit", 0.7)]
SHARED_DATA = ROOT.parent / "shared" / "datasets"
CIFAR_TEST = SHARED_DATA / "cifar10-jpg" / "test"


@pytest.mark.parametrize("label,kind,floor", SHIPPED)
def test_shipped_weights_classify_examples(label, kind, floor):
    name = tab.MODELS[label]
    if not weights.available(name):
        pytest.skip(f"{name} weights not shipped")
    monkey = weights._cache.copy()
    try:
        column = 1 + 2 * list(tab.MODELS).index(label)  # outputs: preview, then (label, heat map) per model
        labels = {Path(p).stem: tab.classify(p, label)[column] for p in tab.example_paths()}
    finally:
        weights._cache.clear()
        weights._cache.update(monkey)
    for stem, top5 in labels.items():
        assert len(top5) == 5 and all(0 <= v <= 1 for v in top5.values())
        assert max(top5, key=top5.get) == stem  # each example is named after its class, the cat photo included
    assert weights.card_metrics(name)["accuracy"] > floor


def test_frame_subject_takes_the_surest_animal_or_vehicle_with_a_quarter_of_its_size_around(monkeypatch):
    import models.detect
    from training.classify import frame_subject
    found = {"boxes": torch.tensor([[0., 0, 50, 50], [100, 40, 180, 80], [120, 50, 160, 70], [10, 10, 20, 20]]),
             "scores": torch.tensor([0.9, 0.6, 0.5, 0.7]),
             "labels": torch.tensor([models.detect.VOC_CLASSES.index(c) for c in ("person", "cat", "dog", "bottle")])}
    monkeypatch.setattr(models.detect, "detect", lambda *args, **kwargs: found)
    detector = type("Detector", (), {"classes": models.detect.VOC_CLASSES})()
    photo = Image.new("RGB", (200, 100))
    crop, subject = frame_subject(photo, detector)
    assert subject[0] == "cat" and abs(subject[1] - 0.6) < 1e-6
    assert crop.size == (120, 60)  # the 80x40 box widened by 20 px each side (x 80..200) and 10 (y 30..90)
    found.update(boxes=found["boxes"][[0, 3]], scores=found["scores"][[0, 3]], labels=found["labels"][[0, 3]])
    crop, subject = frame_subject(photo, detector)  # a person and a bottle: nothing a CIFAR-10 class could be
    assert subject is None and crop is photo


def test_framing_finds_a_small_subject_that_the_whole_photo_hides(tmp_path):
    if not all(weights.available(n) for n in (tab.DETECTOR, *tab.MODELS.values())):
        pytest.skip("weights not shipped")
    cat = Image.open(tab.EXAMPLES_DIR / "cat.jpg").convert("RGB")
    photo = Image.new("RGB", (960, 640), (128, 128, 128))
    photo.paste(cat.resize((240, 160)), (560, 380))  # a cat filling 6% of the photo
    crop, note = tab.frame_photo(photo)
    (tmp_path / "cat").mkdir()
    photo.save(tmp_path / "cat" / "small.png")  # evaluate --frame sees what the tab sees
    images, _ = read_folder(tmp_path, frame=weights.load(tab.DETECTOR))
    assert torch.equal(images[0], (tab.prepare(crop)[1][0] * 255).round().to(torch.uint8))
    assert note.startswith("Framed on the detector's *cat*")
    assert 240 <= crop.width <= 400 and 160 <= crop.height <= 270  # the cat and a quarter of it around
    assert note.endswith(f": {100 * crop.width / 960:.0f}% x {100 * crop.height / 640:.0f}% of the photo.")
    framed, whole = tab.classify(photo, tab.COMPARE, True), tab.classify(photo, tab.COMPARE, False)
    top = lambda out: [max(out[i], key=out[i].get) for i in (1, 3, 5)]
    assert top(framed) == ["cat"] * 3 and "cat" not in top(whole)
    assert framed[-1] == note and whole[-1] == ""
    _, note = tab.frame_photo(Image.new("RGB", (300, 200), (128, 128, 128)))
    assert note.startswith("The detector found no animal or vehicle")


def test_tab_averages_the_views_each_card_is_measured_with():
    from training.classify import RECIPES, WEIGHT_NAMES
    assert tab.TTA == {WEIGHT_NAMES[kind]: RECIPES[kind].tta for _, kind, _ in SHIPPED}
    with pytest.raises(ValueError, match="level"):
        tta_logits(trained_like(small("compact")), torch.rand(1, 3, 32, 32), 4)


@pytest.mark.parametrize("label,kind,floor", SHIPPED)
def test_shipped_accuracy_matches_card(label, kind, floor):
    """The shipped weights score their card's single-view test accuracy. One view, not the headline's 6 or 18
    test-time views (24 of the suite's 35 minutes on a 2-core AVX2 CPU): the views are a fixed function of the
    weights, checked in ``test_predict_tta_and_accuracy_report``."""
    from training.classify import load_split
    name = tab.MODELS[label]
    if not weights.available(name) or not CIFAR_TEST.is_dir():
        pytest.skip(f"needs the shipped {name} weights and the CIFAR-10 test folder")
    images, labels = load_split("test")
    model = weights.load(name).to(memory_format=torch.channels_last)
    acc = accuracy_report(predict(model, images, tta=0), labels, model.classes)["accuracy"]
    assert abs(acc - weights.card_metrics(name)["accuracy_no_tta"]) < 0.003  # fp16-stored weights


@pytest.fixture(scope="module")
def voc_photos(tmp_path_factory) -> Path:
    from training.detect import voc_dataset
    from training.photos import write_photos
    if not (SHARED_DATA / "VOCdevkit" / "VOC2007" / "Annotations").is_dir():
        pytest.skip("needs VOC2007 in ../shared/datasets")
    out = tmp_path_factory.mktemp("voc-photos")
    write_photos(voc_dataset(SHARED_DATA, "trainval"), out)
    return out / "photos"


@pytest.mark.parametrize("label,kind,floor", SHIPPED)
def test_shipped_accuracy_on_real_photos_matches_card(label, kind, floor, voc_photos):
    """The card's accuracy on real photos (``training.photos``), with the tab's preprocessing and views."""
    name = tab.MODELS[label]
    if not weights.available(name):
        pytest.skip(f"{name} weights not shipped")
    images, labels = read_folder(voc_photos)
    model = weights.load(name).to(memory_format=torch.channels_last)
    acc = accuracy_report(predict(model, images, tta=tab.TTA[name]), labels, model.classes)["accuracy"]
    assert abs(acc - weights.card_metrics(name)["accuracy_voc_photos"]) < 0.003


# --------------------------------------------------------------------------- found surviving mutations

def test_to_rgb_applies_the_exif_orientation(tmp_path):
    image = Image.new("RGB", (40, 20), "red")
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left
    exif = Image.Exif()
    exif[274] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    shown = to_rgb(str(tmp_path / "phone.jpg"))
    assert shown.size == (20, 40)
    r, g, b = shown.getpixel((10, 5))  # the blue left edge is now the top
    assert b > 200 and r < 60


def test_to_rgb_decodes_a_large_jpeg_file_at_reduced_scale(tmp_path):
    """A JPEG file is decoded at the smallest 1/2, 1/4, 1/8 scale whose longer side is still DECODE_SIDE or more
    (either orientation), looks like the full decode shrunk, and keeps its EXIF rotation; small JPEGs, other
    formats and images already decoded come back whole."""
    from demos.common import DECODE_SIDE
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize((4032, 3024), Image.BICUBIC)
    smooth.save(tmp_path / "phone.jpg", quality=92)
    smooth.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "portrait.jpg", quality=92)
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 degrees clockwise to display
    smooth.save(tmp_path / "rotated.jpg", quality=92, exif=exif)
    smooth.resize((2 * DECODE_SIDE - 2, 900)).save(tmp_path / "mid.jpg")  # 1/2 would be under DECODE_SIDE
    smooth.save(tmp_path / "phone.png")
    assert to_rgb(str(tmp_path / "phone.jpg")).size == (1008, 756)
    assert to_rgb(str(tmp_path / "portrait.jpg")).size == (756, 1008)
    assert to_rgb(str(tmp_path / "rotated.jpg")).size == (756, 1008)
    assert to_rgb(str(tmp_path / "mid.jpg")).size == (2 * DECODE_SIDE - 2, 900)
    assert to_rgb(str(tmp_path / "phone.png")).size == (4032, 3024)
    decoded = Image.open(tmp_path / "phone.jpg")
    decoded.load()
    assert to_rgb(decoded).size == (4032, 3024)
    small = np.asarray(to_rgb(str(tmp_path / "phone.jpg")), dtype=np.float32)
    full = np.asarray(decoded.convert("RGB").resize((1008, 756), Image.BOX), dtype=np.float32)
    assert np.abs(small - full).mean() < 2.0  # out of 255


def test_to_rgb_refuses_images_over_the_pixel_limit():
    with pytest.raises(gr.Error, match="megapixels"):
        to_rgb(Image.new("L", (8001, MAX_IMAGE_PIXELS // 8000)))
    assert to_rgb(Image.new("L", (8000, MAX_IMAGE_PIXELS // 8000))).size == (8000, 5000)  # at the limit: fine


def test_greedy_soup_drops_members_that_lower_validation_accuracy(tmp_path, monkeypatch, capsys):
    """Validation accuracy is made a known function of one weight (the soup's mean of it), so the greedy
    choice is known: start from the best member (1.0); adding either other one lowers it, so both are dropped."""
    import training.classify as tc
    sources, key = [], None
    for i, marker in enumerate((1.0, 0.0, 0.5)):
        model = small("vit")
        key = key or next(iter(model.state_dict()))
        with torch.no_grad():
            model.state_dict()[key].view(-1)[0] = marker
        weights.save(model, tmp_path / f"w{i}")
        sources.append(str(tmp_path / f"w{i}"))
    images, labels = torch.zeros(8, 3, 32, 32, dtype=torch.uint8), torch.zeros(8, dtype=torch.long)
    monkeypatch.setattr(tc, "load_split", lambda split, root=None: (images, labels))

    def fake_predict(model, x, tta=0, batch_size=500):  # the first marker * len(x) images right (class 0)
        right = round(float(model.state_dict()[key].view(-1)[0]) * len(x))
        logits = torch.zeros(len(x), 10)
        logits[:right, 0], logits[right:, 1] = 1.0, 1.0
        return logits
    monkeypatch.setattr(tc, "predict", fake_predict)
    monkeypatch.setattr(sys, "argv", ["training.classify", "average", "--data", str(tmp_path), "--val-size", "4",
                                      "--greedy", "--weights", *sources, "--out", str(tmp_path / "soup")])
    tc.main()
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["members"] == {sources[0]: 1.0, sources[1]: 0.0, sources[2]: 0.5}
    assert out["chosen"] == [sources[0]] and out["val_accuracy"] == 1.0


def test_int8_export_is_static_qdq_when_calibration_images_are_given(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from training.classify import export, quantize_onnx, run_exported
    model = trained_like(small("compact"))
    path = export(model, tmp_path / "m.onnx", "onnx")
    static = quantize_onnx(path, tmp_path / "s.int8.onnx", torch.rand(64, 3, 32, 32))
    dynamic = quantize_onnx(path, tmp_path / "d.int8.onnx")
    ops = lambda p: {n.op_type for n in onnx.load(str(p)).graph.node}  # noqa: E731
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(static) and "DynamicQuantizeLinear" not in ops(static)
    assert "DynamicQuantizeLinear" in ops(dynamic)
    assert run_exported(static, torch.rand(3, 3, 32, 32)).shape == (3, 10)
    assert not (tmp_path / "s.int8.pre.onnx").exists()  # the pre-processed intermediate is removed


def test_loading_is_strict_by_default_so_missing_layers_never_stay_random(tmp_path):
    import training.classify as tc
    from models.classify import ViT
    from training.common import from_pretrained
    weights.save(small("vit"), tmp_path / "w")
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    (tmp_path / "w" / "config.json").write_text(json.dumps({**config, "depth": config["depth"] + 1}))
    with pytest.raises(RuntimeError, match="Missing key"):
        from_pretrained(ViT, tmp_path / "w")
    with pytest.raises(SystemExit) as e:  # evaluate / export / average: a one-line CLI error, not a random block
        tc.load_folder(tmp_path / "w")
    assert e.value.code == 2
