"""The detector: box coding, assignment and losses, NMS in postprocess, the VOC / torchmetrics AP
(against APs computed by hand), the tab's functions, and (with ../shared) the VOC reader and evaluate CLI."""
from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import gradio as gr
import pytest
import torch

import weights
from models.detect import YOLO, YOLOConfig, detect, letterbox, letterbox_scales, to_image_boxes
from training import detect as train_detect
from training.common import default_data

ROOT = Path(__file__).resolve().parent.parent
VOC = default_data("VOCdevkit/VOC2007")
needs_voc = pytest.mark.skipif(not (VOC / "Annotations").is_dir(), reason="VOC2007 not in ../shared/datasets")
needs_weights = pytest.mark.skipif(not weights.available("yolo-voc"), reason="yolo-voc not trained yet")
SIZE = (64, 64)
torch.set_num_threads(1)  # two threads on a shared 2-core box spin-wait each other (as in test_loop)


def tiny() -> YOLO:
    torch.manual_seed(0)
    return YOLO(YOLOConfig(compact_widths=[8, 16, 32], stage_widths=[16, 16], neck_width=16, head_width=16,
                           image_size=64, level_limits=[16.0, 32.0])).eval()


def encode(model: YOLO, boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Raw outputs that decode to exactly ``boxes`` (one cell each, the stride-8 cell nearest the box
    centre) with scores ``scores``; every other cell scores ~0."""
    points, strides = model.grid(SIZE)
    raw = torch.full((1, len(points), 5 + model.config.num_classes), -20.0)
    r, a = model.config.offset_range, model.config.anchor
    used = set()
    for box, label, score in zip(boxes, labels, scores):
        centre, wh = (box[:2] + box[2:]) / 2, box[2:] - box[:2]
        dist = ((points - centre).abs().max(1).values + 1e3 * (strides != 8)).clone()
        dist[list(used)] = float("inf")
        j = int(dist.argmin())
        used.add(j)
        raw[0, j, :2] = torch.logit(((centre - points[j]) / strides[j] + r) / (2 * r))
        raw[0, j, 2:4] = torch.log(wh / (a * strides[j]))
        raw[0, j, 4] = 20.0
        raw[0, j, 5 + int(label)] = torch.logit(torch.tensor(float(score)))
    return raw


# --------------------------------------------------------------------------- model

def test_decode_inverts_encode_and_perfect_predictions_cost_nothing():
    model = tiny()
    boxes = torch.tensor([[4.0, 6.0, 20.0, 18.0], [30.0, 28.0, 44.0, 46.0]])
    raw = encode(model, boxes, torch.tensor([3, 7]), torch.tensor([0.9, 0.8]))
    decoded = model.decode(raw, SIZE)[0]
    hit = raw[0, :, 4] > 0
    assert torch.allclose(decoded[hit], boxes, atol=1e-3)
    idx = model.assign(boxes, SIZE)  # every assigned cell must lie within `radius` strides of its box centre
    points, strides = model.grid(SIZE)
    centre = (boxes[idx[idx >= 0]][:, :2] + boxes[idx[idx >= 0]][:, 2:]) / 2
    assert ((points[idx >= 0] - centre).abs() < model.config.radius * strides[idx >= 0, None]).all()
    assert set(idx[idx >= 0].tolist()) == {0, 1}


def test_offsets_are_bounded_and_sizes_log_space():
    model = tiny()
    points, strides = model.grid(SIZE)
    raw = torch.zeros(1, len(points), 25)
    raw[..., :2] = 1e4  # saturated offsets stop at offset_range cells
    raw[..., 2:4] = math.log(2.0)
    boxes = model.decode(raw, SIZE)[0]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert torch.allclose(centre - points, model.config.offset_range * strides[:, None].expand(-1, 2), atol=1e-3)
    assert torch.allclose(boxes[:, 2] - boxes[:, 0], 2 * model.config.anchor * strides, rtol=1e-4)


def test_training_reduces_the_loss():
    model = tiny().train()
    x = torch.rand(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 48.0]]), "labels": torch.tensor([14])},
               {"boxes": torch.tensor([[2.0, 30.0, 14.0, 44.0], [20.0, 4.0, 62.0, 60.0]]),
                "labels": torch.tensor([7, 11])}]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = model.loss(model(x), targets, SIZE)
        opt.zero_grad()
        loss["loss"].backward()
        opt.step()
        losses.append(loss["loss"].item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0]


def test_postprocess_nms_on_hand_made_boxes():
    model = tiny()
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0],   # person 0.9
                          [11.0, 10.0, 31.0, 30.0],   # person 0.8, IoU 0.9 with the first: suppressed
                          [10.0, 11.0, 30.0, 31.0],   # dog 0.7 on the same spot: another class, kept
                          [40.0, 40.0, 60.0, 60.0],   # person 0.6, far away: kept
                          [18.0, 10.0, 38.0, 30.0],   # person 0.5, IoU 12/28 = 0.43 with the first
                          [44.0, 8.0, 56.0, 20.0]])   # person 0.1: under the score threshold
    labels = torch.tensor([14, 14, 11, 14, 14, 14])
    raw = encode(model, boxes, labels, torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.1]))
    det = model.postprocess(raw, SIZE, score_threshold=0.25, nms_iou=0.5)[0]
    assert torch.allclose(det["scores"], torch.tensor([0.9, 0.7, 0.6, 0.5]), atol=1e-3)
    assert det["labels"].tolist() == [14, 11, 14, 14]
    assert torch.allclose(det["boxes"], boxes[[0, 2, 3, 4]], atol=1e-3)
    stricter = model.postprocess(raw, SIZE, score_threshold=0.25, nms_iou=0.4)[0]  # 0.43 > 0.4: merged
    assert stricter["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6], abs=1e-3)
    low = model.postprocess(raw, SIZE, score_threshold=0.05, nms_iou=0.5)[0]
    assert len(low["scores"]) == 5 and low["scores"][-1] == pytest.approx(0.1, abs=1e-3)
    assert len(model.postprocess(raw, SIZE, score_threshold=0.95)[0]["scores"]) == 0
    # bf16 logits (the trainer's autocast) are scored and decoded in fp32, where bf16's 8-bit mantissa would tie
    half = model.postprocess(raw.bfloat16(), SIZE, score_threshold=0.25, nms_iou=0.5)[0]
    assert half["scores"].dtype == torch.float32 and half["boxes"].dtype == torch.float32
    assert half["labels"].tolist() == [14, 11, 14, 14]


def test_letterbox_and_detect_map_back_to_the_image():
    model = tiny()
    image = torch.rand(3, 50, 120)
    square, scale, (h, w) = letterbox(image, 64)
    assert square.shape == (3, 64, 64) and (h, w) == (27, 64) and scale == pytest.approx(64 / 120)
    assert (square[:, h:] == 0.5).all()
    det = detect(model, image, score_threshold=0.0, nms_iou=0.5)
    assert len(det["boxes"]) > 0
    assert (det["boxes"][:, 0::2] <= 120).all() and (det["boxes"][:, 1::2] <= 50).all() and (det["boxes"] >= 0).all()


# --------------------------------------------------------------------------- metrics

def hand_made_case():
    """Class 0: image A has g1 and g2 (difficult), image B has g3 and g4: 3 positives. Detections by
    score: d1 on g1 (TP), d2 on nothing in B (FP), d3 on g2 (difficult: ignored), d4 on g3 (TP), d5 a
    duplicate of g1 (FP); g4 is missed. Class 1: one box in B, found exactly (AP 1)."""
    gts = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]),
            "labels": torch.tensor([0, 0]), "difficult": torch.tensor([False, True])},
           {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [70.0, 0.0, 90.0, 20.0]]),
            "labels": torch.tensor([0, 0, 1]), "difficult": torch.tensor([False, False, False])}]
    preds = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [1.0, 0.0, 10.0, 10.0]]),
              "scores": torch.tensor([0.9, 0.7, 0.5]), "labels": torch.tensor([0, 0, 0])},
             {"boxes": torch.tensor([[40.0, 40.0, 45.0, 45.0], [0.0, 1.0, 10.0, 10.0], [70.0, 0.0, 90.0, 20.0]]),
              "scores": torch.tensor([0.8, 0.6, 0.3]), "labels": torch.tensor([0, 0, 1])}]
    return preds, gts


def test_ap_matches_hand_computed_values():
    preds, gts = hand_made_case()
    # class 0, difficult match dropped: TP FP TP FP -> recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2
    voc = train_detect.voc_eval(preds, gts, 2)
    assert voc["ap"][0] == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)           # all-point: 5/9
    assert voc["ap07"][0] == pytest.approx((4 * 1 + 3 * 2 / 3) / 11)          # 11-point: t<=0.3 -> 1, 0.4-0.6 -> 2/3
    assert voc["ap"][1] == pytest.approx(1.0) and voc["ap07"][1] == pytest.approx(1.0)
    report = train_detect.detection_metrics(preds, gts, ["a", "b"])
    # COCO's 101 recall points: 0.00-0.33 -> 1, 0.34-0.66 -> 2/3, 0.67-1.00 -> 0 (difficult = crowd: ignored)
    assert report["per_class_ap50"]["a"] == pytest.approx((34 + 33 * 2 / 3) / 101, abs=1e-4)
    assert report["per_class_ap50"]["b"] == pytest.approx(1.0)
    assert report["map50"] == pytest.approx(((34 + 22) / 101 + 1) / 2, abs=1e-4)
    assert report["map50_voc"] == pytest.approx((5 / 9 + 1) / 2, abs=1e-4)
    assert report["map50_voc07"] == pytest.approx((6 / 11 + 1) / 2, abs=1e-4)


def test_perfect_and_empty_detections():
    _, gts = hand_made_case()
    perfect = [{"boxes": g["boxes"], "scores": torch.ones(len(g["labels"])), "labels": g["labels"]} for g in gts]
    report = train_detect.detection_metrics(perfect, gts, ["a", "b"])
    assert report["map50"] == pytest.approx(1.0) and report["map50_voc07"] == pytest.approx(1.0)
    empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    report = train_detect.detection_metrics(empty, gts, ["a", "b"])
    assert report["map50"] == 0.0 and report["map50_voc07"] == 0.0


def test_parse_target_handles_single_and_difficult_objects():
    one = {"annotation": {"object": {"name": "dog", "difficult": "1",
                                     "bndbox": {"xmin": "11", "ymin": "21", "xmax": "50", "ymax": "60"}}}}
    t = train_detect.parse_target(one)
    assert t["boxes"].tolist() == [[10.0, 20.0, 50.0, 60.0]] and t["labels"].tolist() == [11]
    assert t["difficult"].tolist() == [True]
    assert len(train_detect.parse_target({"annotation": {}})["labels"]) == 0


# --------------------------------------------------------------------------- tab

def test_tab_rejects_bad_input():
    from demos import detect as tab
    with pytest.raises(gr.Error, match="provide an image"):
        tab.detect_objects(None)
    with pytest.raises(gr.Error, match="between 0 and 1"):
        tab.detect_objects(tab.example_paths()[0], float("nan"))
    with pytest.raises(gr.Error, match="Unknown class"):
        tab.detect_objects(tab.example_paths()[0], 0.3, 0.5, ["zebra"])
    with pytest.raises(gr.Error, match="must be a list of class names"):  # was "Unknown class 'p'"
        tab.detect_objects(tab.example_paths()[0], 0.3, 0.5, "person")


def test_tab_counts_and_drawing():
    from PIL import Image

    from demos import detect as tab
    dets = [("person", 0.9, [10.0, 10.0, 50.0, 90.0]), ("dog", 0.8, [60.0, 50.0, 100.0, 90.0]),
            ("person", 0.4, [70.0, 5.0, 95.0, 45.0])]
    assert tab.counts(dets) == [["person", 2, 0.9], ["dog", 1, 0.8]]
    image = Image.new("RGB", (2000, 1000), "white")
    drawn = tab.draw(image, dets)
    assert max(drawn.size) == tab.VIEW_SIZE and drawn.getpixel((799, 399)) == (255, 255, 255)
    assert drawn.getpixel((round(10 * 0.4), round(80 * 0.4))) != (255, 255, 255)  # the person box's left edge


def test_detect_photo_maps_boxes_of_a_shrunk_photo_back(monkeypatch):
    from PIL import Image

    import models.detect as md
    model = tiny()
    for size in ((4000, 2000), (4000, 30)):  # shrunk to 1024x512 and 1024x8: per-axis ratios 3.906 and 3.75
        work = Image.new("RGB", size)
        work.thumbnail((1024, 1024), Image.BILINEAR)
        whole = torch.tensor([[0.0, 0.0, work.width, work.height]])  # a box over the whole work image
        monkeypatch.setattr(md, "detect", lambda m, x, *a: {"boxes": whole, "scores": torch.tensor([0.5]),
                                                            "labels": torch.tensor([11])})
        assert md.detect_photo(model, Image.new("RGB", size)) == [("dog", 0.5, pytest.approx([0, 0, *size]))]


@needs_weights
def test_tab_on_example_photos():
    from demos import detect as tab
    photo = next(p for p in tab.example_paths() if Path(p).stem == "astronaut")
    image, rows, summary = tab.detect_objects(photo, 0.05, 0.5)
    assert rows and sum(r[1] for r in rows) >= 1 and "object" in summary
    only = tab.detect_objects(photo, 0.05, 0.5, [rows[0][0]])[1]
    assert [r[0] for r in only] == [rows[0][0]]
    gray = next(p for p in tab.example_paths() if Path(p).stem == "cameraman-gray")
    assert tab.detect_objects(gray, 0.3, 0.5)[0].mode == "RGB"
    _, rows, summary = tab.detect_objects(photo, 0.95, 0.5, ["sheep"])
    assert rows == [] and "Nothing detected" in summary


@needs_weights
def test_a_phone_sized_jpeg_gets_the_boxes_of_its_full_decode(tmp_path, monkeypatch):
    """The tab decodes a 12 MP JPEG at 1/4 scale (2.6x faster end to end, bench.detect): the same objects, scores
    within 0.02 and boxes within 0.5% of the photo's width of those found on the full decode."""
    from PIL import Image

    from demos import common
    from demos import detect as tab
    photo = Image.open(next(p for p in tab.example_paths() if Path(p).stem == "astronaut")).convert("RGB")
    path = str(tmp_path / "phone.jpg")
    photo.resize((4032, 3024), Image.BICUBIC).save(path, quality=92)
    rgb, reduced, _ = tab.find(path, 0.2, 0.5, None)
    assert rgb.size == (1008, 756)
    monkeypatch.setattr(common, "DECODE_SIDE", 10**9)
    rgb, full, _ = tab.find(path, 0.2, 0.5, None)
    assert rgb.size == (4032, 3024) and full
    assert [d[0] for d in reduced] == [d[0] for d in full]
    for (_, score, box), (_, full_score, full_box) in zip(reduced, full):
        assert abs(score - full_score) < 0.02
        assert max(abs(4 * a - b) for a, b in zip(box, full_box)) < 0.005 * 4032


@needs_weights
def test_live_frames_get_boxes_and_a_status_line():
    from PIL import Image

    from demos import detect as tab
    frame = Image.open(next(p for p in tab.example_paths() if Path(p).stem == "astronaut")).convert("RGB")
    assert tab.detect_live(None) == (None, "")  # the stream starts before the camera sends a frame
    image, status = tab.detect_live(frame, 0.2, 0.5)
    expected = tab.counts(tab.run_detector(frame, 0.2, 0.5))
    assert status.startswith(", ".join(f"{name} x{count}" for name, count, _ in expected))
    assert re.search(r"\(\d+ ms for this frame\)$", status) and image.size == frame.size
    assert tab.detect_live(frame, 0.95, 0.5, ["sheep"])[1].startswith("nothing (")
    with pytest.raises(gr.Error, match="between 0 and 1"):
        tab.detect_live(frame, 2.0)


# --------------------------------------------------------------------------- data (needs ../shared)

@needs_voc
def test_voc_reader_and_augmentation():
    import random
    ds = train_detect.voc_dataset(VOC, "val")
    assert len(ds) == 2510
    image, annotation = ds[0]
    t = train_detect.parse_target(annotation)
    assert len(t["labels"]) >= 1 and (t["boxes"][:, 2] <= image.width).all()
    x, boxes, kept = train_detect.augment(image, t["boxes"], 96, random.Random(0))
    assert x.shape == (3, 96, 96) and len(boxes) == len(kept)
    assert (boxes >= 0).all() and (boxes <= 96).all()


@needs_voc
@needs_weights
def test_evaluate_cli_prints_one_json_line():
    out = subprocess.run([sys.executable, "-m", "training.detect", "evaluate", "--weights", "weights/yolo-voc",
                          "--limit", "24", "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, lines  # nothing else on stdout (huggingface_hub's load message goes to stderr)
    report = json.loads(lines[0], parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert report["images"] == 24 and 0.0 <= report["map50"] <= 1.0 and len(report["per_class_ap50"]) == 20
    # classes absent from these 24 images have no AP: null, not NaN (invalid JSON) or torchmetrics' -1
    aps = report["per_class_ap50"].values()
    assert None in aps and all(ap is None or 0.0 <= ap <= 1.0 for ap in aps)
    assert {"map50_voc07", "map50_voc"} <= set(report)
    tail = subprocess.run([sys.executable, "-m", "training.detect", "evaluate", "--weights", "weights/yolo-voc",
                           "--start", "2505", "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert tail.returncode == 0 and json.loads(tail.stdout)["images"] == 5  # --start skips the selection images
    bad = subprocess.run([sys.executable, "-m", "training.detect", "evaluate", "--weights", "weights/no-such"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a weights folder" in bad.stderr


def test_voc_paths_for_other_years_and_missing_splits(tmp_path):
    folder = tmp_path / "VOCdevkit" / "VOC2012"
    (folder / "JPEGImages").mkdir(parents=True)
    assert train_detect.voc_root(folder, "2007") == (tmp_path, "2012")  # a VOC20xx folder names its year
    assert train_detect.voc_root(tmp_path, "2012") == (tmp_path, "2012")
    with pytest.raises(FileNotFoundError, match="VOC2012 'test'"):
        train_detect.voc_dataset(folder, "test")


@needs_voc
def test_init_continues_a_whole_detector_end_to_end(tmp_path):
    start = tmp_path / "start"
    weights.save(tiny(), start)
    run = [sys.executable, "-m", "training.detect", "--init", str(start), "--unfreeze", "--limit", "8",
           "--batch-size", "4", "--epochs", "1", "--val-images", "4", "--threads", "1", "--out", str(tmp_path / "ck"),
           "--weights-out", str(tmp_path / "out"), "--fresh"]
    frozen = [a for a in run if a != "--unfreeze"]
    bad = subprocess.run(frozen + ["--size", "96"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "pass --size 64, or --unfreeze" in bad.stderr  # frozen features need its size
    bad = subprocess.run(run + ["--size", "96", "--multiscale", "64", "100"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "multiples of 32" in bad.stderr
    # end to end it may be fine-tuned at another size, here with batches of 64 and 96 px (multi-scale)
    out = subprocess.run(run + ["--size", "96", "--multiscale", "64", "96"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = YOLO.from_pretrained(str(start)), YOLO.from_pretrained(str(tmp_path / "out"))
    # the whole detector, config included, came from --init; it now detects at the size it was tuned at
    assert after.config == dataclasses.replace(before.config, image_size=96)
    moved = [k for k, v in after.state_dict().items() if not torch.equal(v, before.state_dict()[k])]
    assert any(k.startswith("trunk.") for k in moved) and any(k.startswith("cls_out") for k in moved), moved
    assert f"started from the detector in `{start}`" in (tmp_path / "out" / "README.md").read_text()


def test_boxes_go_back_to_image_pixels_clipped_to_the_image():
    """Letterboxed boxes are divided by the scale and clipped to the image, in the tab and in the mAP
    evaluation alike: an unclipped box of an object cut by the border scored as a false positive."""
    boxes = torch.tensor([[-45.0, 10.0, 40.0, 50.0], [20.0, 20.0, 300.0, 90.0]])
    out = to_image_boxes(boxes.clone(), 0.5, height=120, width=200)
    assert out.tolist() == [[0.0, 20.0, 80.0, 100.0], [40.0, 40.0, 200.0, 120.0]]
    from torchvision.ops import box_iou
    truth = torch.tensor([[0.0, 20.0, 80.0, 100.0]])
    assert box_iou(boxes[:1] / 0.5, truth).item() < 0.5 < box_iou(out[:1], truth).item()


def test_each_axis_maps_back_with_its_own_rounded_scale():
    """letterbox rounds each side of the resize: a 30x1024 image becomes 8x256 (scale 0.267 across, 0.25
    down), so one factor put the bottom of a full-height box at 28.4 px instead of 30."""
    image = torch.rand(3, 30, 1024)
    _, _, resized = letterbox(image, 256)
    scales = letterbox_scales((30, 1024), resized)
    full = torch.tensor([[0.0, 0.0, float(resized[1]), float(resized[0])]])
    assert to_image_boxes(full, scales, 30, 1024)[0].tolist() == pytest.approx([0.0, 0.0, 1024.0, 30.0])
    for size in (300, 32, 0):  # not a multiple of the largest stride (the feature maps would not line up)
        with pytest.raises(ValueError, match="multiple of 32"):
            detect(tiny(), image, size=size)
    out = subprocess.run([sys.executable, "-m", "training.detect", "evaluate", "--weights", "weights/yolo-voc",
                          "--size", "300"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--size: input size 300: use a multiple of 32" in out.stderr


def test_recalibrate_bn_on_fewer_images_than_its_sample():
    """A smoke run of 4 images (--limit 4) crashed: the last batch ran to min(n, start + batch) = 16, past the
    data, whenever the set was under 256 images and not a multiple of 16."""
    from training.detect import recalibrate_bn

    class Views:
        def __len__(self) -> int:
            return 5

        def view(self, i: int, rng) -> tuple[torch.Tensor, dict]:
            assert i < 5
            return torch.rand(3, 64, 64), {}
    model = tiny()
    recalibrate_bn(model, Views())
    assert not model.trunk.training
    assert any(m.num_batches_tracked.item() > 0 for m in model.trunk.modules() if isinstance(m, torch.nn.BatchNorm2d))


# --------------------------------------------------------------------------- found surviving mutations

def test_tab_passes_its_score_and_nms_thresholds_to_the_detector(monkeypatch):
    from PIL import Image

    from demos import detect as tab
    seen = []
    monkeypatch.setattr(tab, "load_model", lambda name: "model")
    monkeypatch.setattr(tab, "detect_photo", lambda model, image, score, nms:
                        (seen.append((score, nms)), [("dog", 0.9, [1.0, 1.0, 20.0, 20.0])])[1])
    tab.detect_objects(Image.new("RGB", (40, 30)), 0.65, 0.35)
    tab.detect_live(Image.new("RGB", (40, 30)), 0.15, 0.8)
    assert seen == [(0.65, 0.35), (0.15, 0.8)]


def test_the_stream_clamps_thresholds_as_they_are_typed(monkeypatch, tmp_path):
    """The webcam stream reads its inputs itself: a frame file becomes a photo, and a slider value typed into its
    box (emptied, 0 on the way to 0.5, 2) is clamped to the slider's range as the box shows it once left."""
    import gradio as gr
    from PIL import Image

    from demos import detect as tab
    from demos.common import ImageInput, SliderInput
    seen = []
    monkeypatch.setattr(tab, "load_model", lambda name: "model")
    monkeypatch.setattr(tab, "detect_photo", lambda model, image, score, nms: (seen.append((score, nms)), [])[1])
    on_frame = tab.live_frames(ImageInput(type="pil"), SliderInput(0.05, 0.95), SliderInput(0.1, 0.9))
    path = tmp_path / "frame.png"
    Image.new("RGB", (40, 30)).save(path)
    frame = {"path": str(path), "meta": {"_type": "gradio.FileData"}}
    for score, nms in ((None, 0.5), (0, 0.5), (2, 0.95), (0.5, None)):
        image, status = on_frame(frame, score, nms, [])
        assert image.size == (40, 30) and status.startswith("nothing (")
    assert seen == [(0.05, 0.5), (0.05, 0.5), (0.95, 0.9), (0.5, 0.1)]
    assert on_frame(None, 0.3, 0.5, []) == (None, "")
    with pytest.raises(gr.Error, match="Score threshold must be a number"):
        on_frame(frame, "x", 0.5, [])
    with pytest.raises(gr.Error, match="not an image file"):
        on_frame("frame.png", 0.3, 0.5, [])
    with pytest.raises(gr.Error, match="Could not read the image"):
        on_frame({"no": "path"}, 0.3, 0.5, [])


def test_a_cell_two_boxes_share_learns_the_smaller_box():
    model = tiny()  # level limits 16 / 32 px: both boxes (24 and 20 px) go to the stride-16 level
    big, small = [20.0, 20.0, 44.0, 44.0], [26.0, 26.0, 46.0, 46.0]
    idx = model.assign(torch.tensor([big, small]), SIZE)
    assert (idx >= 0).sum() == 4 and set(idx[idx >= 0].tolist()) == {1}  # the four shared cells: the smaller box


def test_objectness_and_class_targets_are_the_assigned_cells_and_their_labels():
    model = tiny()
    boxes, labels = torch.tensor([[2.0, 30.0, 14.0, 44.0], [20.0, 4.0, 62.0, 60.0]]), torch.tensor([7, 11])
    targets = [{"boxes": boxes, "labels": labels}]
    idx = model.assign(boxes, SIZE)
    assert set(idx[idx >= 0].tolist()) == {0, 1}
    raw = torch.full((1, len(idx), 25), -20.0)
    raw[0, idx >= 0, 4] = 20.0  # objectness: sure exactly at the assigned cells
    raw[0, idx >= 0, 5 + labels[idx[idx >= 0]]] = 20.0  # each assigned cell: its box's class
    right = model.loss(raw, targets, SIZE)
    assert right["obj"] < 1e-3 and right["cls"] < 1e-3
    raw[0, :, 4] = -20.0  # objectness nowhere: every positive cell costs ~20 nats (per positive)
    assert model.loss(raw, targets, SIZE)["obj"] == pytest.approx(20.0, rel=1e-3)


def test_all_point_ap_uses_the_interpolated_precision_envelope():
    """FP, TP, TP on two positives: precision 0, 1/2, 2/3 at recall 0, 1/2, 1. The devkit's envelope makes it
    2/3 everywhere up to recall 1 (AP 2/3); the raw curve would give 1/2 * 1/2 + 1/2 * 2/3."""
    gts = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]), "labels": torch.tensor([0, 0])}]
    preds = [{"boxes": torch.tensor([[50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]),
              "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([0, 0, 0])}]
    voc = train_detect.voc_eval(preds, gts, 1)
    assert voc["ap"][0] == pytest.approx(2 / 3) and voc["ap07"][0] == pytest.approx(2 / 3)
