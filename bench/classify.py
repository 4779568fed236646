"""Classifier speed on the CPU: single-image latency and batch-64 throughput, PyTorch fp32 vs int8 vs
ONNX Runtime (fp32 and int8), and the int8 models' accuracy cost on the CIFAR-10 test set.

    python -m bench.classify [--repeats 5] [--threads 1] [--models compact resnet18 vit]
    python -m bench.classify --training [--threads 2]    # training steps: eager vs torch.compile

Uses the shipped weights when present, else a randomly initialized model of the same size (speed does not
depend on the weights; accuracies are reported only for shipped weights and when the test set is present).
int8: PyTorch dynamic quantization (Linear layers only, so it helps the ViT), ONNX Runtime static QDQ
quantization calibrated on 512 training images for the conv nets, dynamic for the ViT.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

import weights
from bench.common import timeit
from training.classify import (WEIGHT_NAMES, accuracy_report, build_model, export, load_split, predict,
                               quantize_onnx)
from training.loop import autocast, precision

TAB = "Classification"


def load(kind: str) -> tuple[nn.Module, bool]:
    try:
        return weights.load(WEIGHT_NAMES[kind]), True
    except weights.WeightsError:
        torch.manual_seed(0)
        return build_model(kind).eval(), False


def ort_session(path: Path, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_predict(session, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([torch.from_numpy(session.run(None, {"image": (c.float() / 255).numpy()})[0])
                      for c in images.split(batch_size)])


def run(repeats: int = 5, threads: int = 1, models: tuple[str, ...] = ("compact", "resnet18", "vit"),
        accuracy: bool = False) -> list[dict[str, Any]]:
    """Rows {tab, case, median_ms, p90_ms, note, model, variant, batch[, accuracy]}: every variant of every
    model at batch 1 and 64 (the int8 accuracy, on the batch-1 rows, only with ``accuracy``)."""
    torch.set_num_threads(threads)
    test = None
    if accuracy:
        try:
            test = load_split("test")
        except Exception:
            test = None
    try:
        train_images, _ = load_split("train")
        calib = train_images[torch.randperm(len(train_images), generator=torch.Generator().manual_seed(0))[:512]]
        calib = calib.float() / 255
    except Exception:
        calib = torch.rand(512, 3, 32, 32)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in models:
            model, shipped = load(kind)
            n_params = sum(p.numel() for p in model.parameters()) / 1e6
            note = f"{'shipped weights' if shipped else 'random init'}, {n_params:.2f}M parameters, {threads} thread(s)"
            variants = {"torch fp32": model.to(memory_format=torch.channels_last)}
            if kind == "vit":
                variants["torch int8 (dynamic)"] = torch.ao.quantization.quantize_dynamic(
                    model, {nn.Linear}, dtype=torch.qint8)
            fp32 = export(model, Path(tmp) / f"{kind}.onnx", "onnx")
            int8 = quantize_onnx(fp32, Path(tmp) / f"{kind}.int8.onnx", None if kind == "vit" else calib)
            sessions = {"onnx fp32": ort_session(fp32, threads), "onnx int8": ort_session(int8, threads)}
            for batch in (1, 64):
                x = torch.rand(batch, 3, 32, 32)
                for name, m in variants.items():
                    xx = x.contiguous(memory_format=torch.channels_last)
                    with torch.no_grad():
                        t = timeit(lambda: m(xx), repeats)
                    rows.append({"tab": TAB, "case": f"{kind}, {name}, batch {batch}", **t, "note": note,
                                 "model": kind, "variant": name, "batch": batch})
                for name, s in sessions.items():
                    xn = x.numpy()
                    t = timeit(lambda: s.run(None, {"image": xn}), repeats)
                    rows.append({"tab": TAB, "case": f"{kind}, {name}, batch {batch}", **t, "note": note,
                                 "model": kind, "variant": name, "batch": batch})
            if shipped and test is not None:
                images, labels = test
                acc = {"torch fp32": accuracy_report(predict(model, images), labels, model.classes)["accuracy"]}
                for name, s in sessions.items():
                    acc[name] = accuracy_report(ort_predict(s, images), labels, model.classes)["accuracy"]
                if "torch int8 (dynamic)" in variants:
                    acc["torch int8 (dynamic)"] = accuracy_report(
                        predict(variants["torch int8 (dynamic)"], images), labels, model.classes)["accuracy"]
                for r in rows:
                    if r["model"] == kind and r["batch"] == 1 and r["variant"] in acc:
                        r["accuracy"] = acc[r["variant"]]
    return rows


def training_steps(models: tuple[str, ...], threads: int = 2, repeats: int = 10,
                   batch: int = 128) -> list[dict[str, Any]]:
    """Median and p90 milliseconds of one optimizer step (channels-last, bf16 autocast where this CPU runs it fast,
    else fp32: as ``training.classify`` runs it) for each model, eager and under ``torch.compile``
    (``--compile``); compilation is the warm-up.
    The shipped architecture (or the default one without weights); the weights are updated in memory only."""
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    rows = []
    for kind in models:
        for compiled in (False, True):
            torch.manual_seed(0)
            model = load(kind)[0].to(memory_format=torch.channels_last).train()
            opt = torch.optim.AdamW(model.parameters(), 1e-3)
            forward = torch.compile(model) if compiled else model
            x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, 10, (batch,))

            def step() -> None:
                with autocast(torch.device("cpu")):
                    loss = F.cross_entropy(forward(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            rows.append({"model": kind, "variant": "torch.compile" if compiled else "eager",
                         **timeit(step, repeats, warmup=2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["compact", "resnet18", "vit"])
    parser.add_argument("--no-accuracy", action="store_true", help="skip the test-set accuracy of int8")
    parser.add_argument("--training", action="store_true",
                        help="time training steps instead (batch 128, eager vs torch.compile)")
    args = parser.parse_args()
    if args.training:
        rows = training_steps(tuple(args.models), args.threads, args.repeats)
        print(f"torch {torch.__version__}, {args.threads} thread(s), batch 128 training step "
              f"({precision(True)}), median of {args.repeats}")
        for kind in args.models:
            eager, comp = (next(r for r in rows if r["model"] == kind and r["variant"] == v)
                           for v in ("eager", "torch.compile"))
            print(f"{kind:9s} eager {eager['median_ms']:7.0f} ms  compiled {comp['median_ms']:7.0f} ms  "
                  f"speed-up {eager['median_ms'] / comp['median_ms']:.2f}x")
        print(json.dumps(rows))
        return
    rows = run(args.repeats, args.threads, tuple(args.models), not args.no_accuracy)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} (ms)")
    for kind in args.models:
        mine = [r for r in rows if r["model"] == kind]
        print(f"\n{kind} ({mine[0]['note']})")
        print(f"{'variant':22s} {'1 image ms':>11s} {'batch-64 img/s':>15s} {'test acc (no TTA)':>18s}")
        for one in (r for r in mine if r["batch"] == 1):
            many = next(r for r in mine if r["variant"] == one["variant"] and r["batch"] == 64)
            acc = f"{one['accuracy']:.4f}" if "accuracy" in one else "-"
            print(f"{one['variant']:22s} {one['median_ms']:11.2f} {64 / many['median_ms'] * 1000:15.0f} {acc:>18s}")
    print(json.dumps([{"model": r["model"], "variant": r["variant"], "batch": r["batch"],
                       "median_ms": round(r["median_ms"], 3)} for r in rows]))


if __name__ == "__main__":
    main()
