"""What every ``python -m training.<task>`` shares: data paths, the CLI shape, JSON output, Hub push."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "datasets"
CHECKPOINTS = ROOT / "checkpoints"


def default_data(relative: str) -> Path:
    """``../shared/datasets/<relative>`` beside the clone; tasks download there-ish for users without it."""
    return SHARED_DATA / relative


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN/inf float (nested) turned into None: strict JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def print_json(metrics: dict[str, Any]) -> None:
    """The last line of stdout of every ``evaluate``: one strict JSON object (undefined metrics are null)."""
    sys.stdout.flush()
    print(json.dumps(finite_or_none(metrics), sort_keys=False, allow_nan=False), flush=True)


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a valid Hub id (``name`` or ``org/name``), else a one-line CLI error."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        fail(f"bad Hub repo id {repo_id!r}: {str(e).splitlines()[0]}")
    return repo_id


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Publish a trained weights folder (config, safetensors, model card) as a Hub model repo; a bad folder,
    repo id, token or network is a one-line error."""
    from huggingface_hub import HfApi
    folder = check_weights_folder(folder)
    check_repo_id(repo_id)
    try:  # a folder whose config no one could load is not published
        if not isinstance(json.loads((folder / "config.json").read_text()), dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        fail(f"{folder / 'config.json'} is not a valid config ({e}); nothing was pushed")
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 allow_patterns=["config.json", "model.safetensors", "README.md"])
    except Exception as e:  # HTTP errors, no token, no network: the folder is safe, say why it did not go
        fail(f"could not push {folder} to {repo_id}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return str(getattr(info, "commit_url", info))


# Numeric options that must be above zero (0 or less trained nothing and still wrote a weights folder, or
# divided by zero) and those that may be zero; whichever a sub-command has. NaN/inf is refused for every option.
POSITIVE_OPTIONS = ("steps", "epochs", "batch_size", "eval_every", "lr", "lr_g", "lr_d", "max_minutes", "threads",
                    "beam_size", "views", "val_images", "samples", "ddpm_samples", "limit", "widths", "multiscale")
NON_NEGATIVE_OPTIONS = ("iw_samples", "warmup", "start", "burn_in")


def check_numbers(args: argparse.Namespace) -> None:
    """A one-line error for an option out of its range (see POSITIVE_OPTIONS), before any data is read."""
    for name, value in vars(args).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        option = "--" + name.replace("_", "-")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not math.isfinite(v):
                fail(f"{option} must be a finite number, got {v}")
            if name in POSITIVE_OPTIONS and v <= 0:
                fail(f"{option} must be above 0, got {v:g}")
            if name in NON_NEGATIVE_OPTIONS and v < 0:
                fail(f"{option} must be 0 or more, got {v:g}")


def check_output_folder(option: str, path: str | Path) -> None:
    """A one-line error, before training, when ``path`` cannot be a folder to write in (it is a file, or it
    cannot be created); a folder created for the check is removed again."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            fail(f"{option} {path} is a file, not a folder")
        return
    created, probe = [], path
    while not probe.exists():
        created.append(probe)
        probe = probe.parent
    try:
        path.mkdir(parents=True)
    except OSError as e:
        fail(f"{option} {path} cannot be created: {e.strerror or e}")
    for folder in created:  # deepest first
        folder.rmdir()


def one_line_errors(kind: type[BaseException], error: BaseException, tb: Any) -> None:
    """sys.excepthook for the CLIs: an uncaught error is one line on stderr, not a traceback (ZOO_TRACEBACK=1
    shows it); an interrupted run says how to resume."""
    if os.environ.get("ZOO_TRACEBACK"):
        sys.__excepthook__(kind, error, tb)
    elif issubclass(kind, KeyboardInterrupt):
        print("interrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
    else:
        text = " ".join(str(error).split())
        print(f"error: {kind.__name__}{': ' + text[:300] if text else ''} (ZOO_TRACEBACK=1 shows where)",
              file=sys.stderr)


def cli(description: str, add_train_args: Callable[[argparse.ArgumentParser], None],
        add_eval_args: Callable[[argparse.ArgumentParser], None],
        extra: dict[str, Callable[[argparse.ArgumentParser], None]] | None = None) -> argparse.Namespace:
    """``python -m training.<task> [train|evaluate|...] ...``; ``train`` is the default sub-command."""
    parser = argparse.ArgumentParser(prog=f"python -m {sys.modules['__main__'].__spec__.name}"
                                     if getattr(sys.modules['__main__'], '__spec__', None) else None,
                                     description=description)
    sub = parser.add_subparsers(dest="command")
    train = sub.add_parser("train", help="train and write a weights folder (default)")
    add_train_args(train)
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    train.add_argument("--push-to-hub", metavar="REPO_ID", default=None,
                       help="publish the written folder to this Hub repo")
    evaluate = sub.add_parser("evaluate", help="print one JSON line of metrics")
    add_eval_args(evaluate)
    evaluate.add_argument("--threads", type=int, default=None)
    push = sub.add_parser("push", help="publish an existing weights folder to the Hub")
    push.add_argument("--weights", required=True)
    push.add_argument("--repo-id", required=True)
    for name, add in (extra or {}).items():
        add(sub.add_parser(name))
    argv = sys.argv[1:]
    if not argv or (argv[0] not in sub.choices and argv[0] not in ("-h", "--help")):
        argv = ["train", *argv]
    args = parser.parse_args(argv)
    sys.excepthook = one_line_errors
    check_numbers(args)
    if args.command == "train":  # found at the start, not when the weights are written after training
        for name in ("out", "weights_out", "checkpoints"):
            if getattr(args, name, None):
                check_output_folder("--" + name.replace("_", "-"), getattr(args, name))
    for repo_id in (getattr(args, "push_to_hub", None), getattr(args, "repo_id", None)):
        if repo_id is not None:  # before training, not after it
            check_repo_id(repo_id)
    set_threads(getattr(args, "threads", None))
    if args.command == "push":
        print(push_to_hub(args.weights, args.repo_id))
        raise SystemExit(0)
    return args


def fail(message: str) -> None:
    """Exit with a one-line error on stderr instead of a traceback (bad paths, bad arguments)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_weights_folder(folder: str | Path) -> Path:
    """``folder`` as a Path, or a one-line CLI error when it lacks config.json or model.safetensors."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        fail(f"{folder} is not a weights folder (config.json and model.safetensors expected)")
    return folder


def from_pretrained(model_class: type, folder: str | Path, **kw: Any) -> Any:
    """``model_class.from_pretrained(folder, strict=True)`` in eval mode; huggingface_hub's "Loading weights
    from local directory" goes to stderr, since stdout is where ``evaluate`` prints its JSON line."""
    kw.setdefault("strict", True)  # missing or unexpected tensors are an error, never random layers
    with contextlib.redirect_stdout(sys.stderr):
        return model_class.from_pretrained(str(folder), **kw).eval()


def load_weights_folder(model_class: type, folder: str | Path) -> Any:
    """``model_class.from_pretrained(folder)`` in eval mode, or a one-line CLI error naming the folder."""
    folder = check_weights_folder(folder)
    try:
        return from_pretrained(model_class, folder, strict=True)  # a wrong model class fails loudly
    except Exception as e:
        fail(f"could not load {folder} as a {model_class.__name__}: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
