"""Detector speed on the CPU: single-image latency of the YOLO-style detector (target < 200 ms).

    python -m bench.detect [--repeats 20] [--threads 1]

Cases: the network alone at its input size, ``models.detect.detect`` end to end on an example photo
(letterbox, network, decoding, NMS), the tab's whole handler (image decode, detection, drawing) on a 320-pixel
photo, on a 1600x1200 one and on a 12-megapixel JPEG file as phones take them (decoded at reduced scale as the
tab does, and in full as the baseline: ``demos.common.DECODE_SIDE`` lifted), and the live webcam handler on a
640x480 frame (its budget: one frame every ``demos.detect.LIVE_EVERY`` seconds). Uses the shipped weights
when present, else a randomly initialized model of the same size with a score threshold of 0 (worst case for
NMS).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import weights
from bench.common import timeit
from models.detect import YOLO, YOLOConfig, detect

TAB = "Detection"
TARGET_MS = 200.0
LIVE_CASE = "live webcam frame (detect, draw), 640x480"
PHONE_CASE = "tab handler, 12 MP JPEG file, reduced-scale decode"
FULL_CASE = "tab handler, 12 MP JPEG file, full decode (baseline)"


def load() -> tuple[YOLO, bool]:
    try:
        return weights.load("yolo-voc"), True
    except weights.WeightsError:
        torch.manual_seed(0)
        return YOLO(YOLOConfig()).eval(), False


def run(repeats: int = 20, threads: int = 1) -> list[dict[str, Any]]:
    """Rows {tab, case, median_ms, p90_ms, note}; the note gives the ratio to the 200 ms target."""
    from demos import common
    from demos import detect as tab
    torch.set_num_threads(threads)
    model, shipped = load()
    model = model.to(memory_format=torch.channels_last)
    threshold = None if shipped else 0.0
    size = model.config.image_size
    example = next(p for p in tab.example_paths() if p.endswith("astronaut.jpg"))
    photo = Image.open(example).convert("RGB")
    large = photo.resize((1600, 1200), Image.BILINEAR)
    frame = photo.resize((640, 480), Image.BILINEAR)
    phone = str(Path(tempfile.mkdtemp()) / "phone.jpg")
    photo.resize((4032, 3024), Image.BICUBIC).save(phone, quality=92)

    def full_decode() -> Any:
        side, common.DECODE_SIDE = common.DECODE_SIDE, 10**9
        try:
            return tab.detect_objects(phone, 0.3, 0.5)
        finally:
            common.DECODE_SIDE = side
    x = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)
    square = torch.rand(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    base = f"{'shipped weights' if shipped else 'random init'}, {threads} thread(s)"
    cases = {
        f"network forward, {size}x{size}": lambda: model(square),
        f"detect() end to end, {photo.width}x{photo.height} photo": lambda: detect(model, x, threshold),
        f"tab handler (decode, detect, draw), {photo.width}x{photo.height} file": lambda: tab.detect_objects(example, 0.3, 0.5),
        "tab handler, 1600x1200 image": lambda: tab.detect_objects(large, 0.3, 0.5),
        PHONE_CASE: lambda: tab.detect_objects(phone, 0.3, 0.5),
        FULL_CASE: full_decode,
        LIVE_CASE: lambda: tab.detect_live(frame, 0.3, 0.5),
    }
    if not shipped:  # the tab loads the registered weights; without them only the model rows can run
        cases = dict(list(cases.items())[:2])
    rows = []
    with torch.no_grad():
        for case, fn in cases.items():
            t = timeit(fn, repeats, warmup=2)
            budget, what = (tab.LIVE_EVERY * 1000, "frame interval") if case == LIVE_CASE else (TARGET_MS, "target")
            rows.append({"tab": TAB, "case": case, **t,
                         "note": f"{base}; {t['median_ms'] / budget:.2f}x the {budget:.0f} ms {what}"})
    shutil.rmtree(Path(phone).parent, ignore_errors=True)
    by_case = {r["case"]: r for r in rows}
    if PHONE_CASE in by_case:
        by_case[PHONE_CASE]["note"] += (f"; {by_case[FULL_CASE]['median_ms'] / by_case[PHONE_CASE]['median_ms']:.1f}x"
                                        " faster than the full decode")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rows = run(args.repeats, args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} (ms)")
    for r in rows:
        print(f"{r['case']:55s} {r['median_ms']:8.2f} ms (p90 {r['p90_ms']:.2f})  {r['note']}")
    print(json.dumps([{"case": r["case"], "median_ms": round(r["median_ms"], 3)} for r in rows]))


if __name__ == "__main__":
    main()
