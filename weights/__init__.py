"""The weights registry: one table of released models, and one way to load each.

Every model lives in ``weights/<name>/`` (``config.json``, ``model.safetensors``, ``README.md`` model
card) or in a Hub repo ``<org>/<name>`` with the same files. Model classes follow the
``huggingface_hub.PyTorchModelHubMixin`` contract, so loading is ``Class.from_pretrained(folder)``:
safetensors only, nothing is ever unpickled.

The Hub is used when ``--hub-org ORG`` is given to ``app.py`` or ``ZOO_HUB_ORG`` is set; otherwise the
local folders, so a fresh clone works offline. ``ZOO_WEIGHTS_DIR`` points the registry at another folder
laid out like ``weights/`` (the tests use it to serve a deliberately corrupted copy).
"""
from __future__ import annotations

import importlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(os.environ.get("ZOO_WEIGHTS_DIR") or Path(__file__).resolve().parent)
HUB_ORG_ENV = "ZOO_HUB_ORG"
REQUIRED_FILES = ("config.json", "model.safetensors")


@dataclass(frozen=True)
class ModelSpec:
    name: str          # folder under weights/ and repo name on the Hub
    model_class: str   # "package.module:Class", imported only when the model is loaded
    task: str          # training module: python -m training.<task>
    train_args: str    # arguments that rebuild this folder (models trained in stages: the recipe's first
                       # command; the folder's card lists every stage)
    title: str         # what the About tab shows

    @property
    def train_command(self) -> str:
        return f"python -m training.{self.task} {self.train_args}".strip()


# One line per released model. A new model adds a line here and a folder under weights/.
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in [
    ModelSpec("gpt-shakespeare", "models.gpt:GPT", "gpt", "", "GPT on Tiny Shakespeare (characters)"),
    ModelSpec("lstm-shakespeare", "models.gpt:CharLSTM", "gpt", "--model lstm",
              "Character LSTM on Tiny Shakespeare (baseline)"),
    ModelSpec("mf-movielens", "models.recsys:BiasedMF", "recommend", "",
              "Biased matrix factorization on MovieLens-100K (ratings)"),
    ModelSpec("bpr-movielens", "models.recsys:BPRMF", "recommend", "--model bpr",
              "BPR matrix factorization on MovieLens-100K (ranking)"),
    ModelSpec("compact-cifar10", "models.classify:CompactNet", "classify",
              "--model compact --epochs 15.5 --val-size 0 --flip alternate",
              "Compact conv net on CIFAR-10"),
    ModelSpec("resnet18-cifar10", "models.classify:ResNet", "classify", "--model resnet18",
              "ResNet-18 on CIFAR-10"),
    ModelSpec("vit-cifar10", "models.classify:ViT", "classify", "--model vit", "Vision Transformer on CIFAR-10"),
    ModelSpec("ddpm-fashion", "models.diffusion:UNet", "diffusion", "--dataset fashion",
              "Class-conditional DDPM on Fashion-MNIST"),
    ModelSpec("ddpm-cifar10", "models.diffusion:UNet", "diffusion", "--dataset cifar10",
              "Class-conditional DDPM on CIFAR-10"),
    ModelSpec("yolo-voc", "models.detect:YOLO", "detect", "", "YOLO-style detector on PASCAL VOC 2007"),
    ModelSpec("captioner-flickr8k", "models.caption:Captioner", "caption",
              "--finetune-encoder --epochs 8 --eval-every 374",
              "CNN + Transformer captioner on Flickr8k"),
    ModelSpec("vae-fashion", "models.generative:VAE", "vae", "", "Convolutional VAE on Fashion-MNIST"),
    ModelSpec("gan-fashion", "models.generative:DCGAN", "gan", "", "DCGAN on Fashion-MNIST"),
    ModelSpec("beta-vae-fashion", "models.generative:VAE", "vae", "--beta 4 --latent-dim 2",
              "beta-VAE (beta=4, 2-d latent) on Fashion-MNIST"),
    ModelSpec("evalnet-fashion", "models.evalnet:EvalNet", "gen_eval", "--dataset fashion",
              "Evaluation classifier for generated Fashion-MNIST images"),
    ModelSpec("evalnet-cifar10", "models.evalnet:EvalNet", "gen_eval", "--dataset cifar10",
              "Evaluation classifier for generated CIFAR-10 images"),
]}


class WeightsError(RuntimeError):
    """A model's weights are missing or unreadable; the message says which file and how to rebuild it."""


def hub_org() -> str | None:
    return os.environ.get(HUB_ORG_ENV) or None


def set_hub_org(org: str | None) -> None:
    if org:
        os.environ[HUB_ORG_ENV] = org
    else:
        os.environ.pop(HUB_ORG_ENV, None)
    _cache.clear()
    _hub_folders.clear()


def spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise WeightsError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


def model_class(name: str) -> type:
    module, cls = spec(name).model_class.split(":")
    return getattr(importlib.import_module(module), cls)


def local_dir(name: str) -> Path:
    return WEIGHTS_DIR / spec(name).name


_hub_folders: dict[str, Path] = {}  # repo id -> its snapshot, so a request asks the Hub once per process


def _missing(folder: Path) -> list[str]:
    return [f for f in REQUIRED_FILES if not (folder / f).is_file()]


def resolve(name: str) -> Path:
    """The folder holding ``name``'s files: the local one, or the Hub snapshot (downloaded once, cached)."""
    org = hub_org()
    if org is None:
        folder = local_dir(name)
        if _missing(folder):
            raise WeightsError(f"{name}: {folder / _missing(folder)[0]} not found. Not trained yet: run "
                               f"`{spec(name).train_command}`")
        return folder
    repo_id = f"{org}/{name}"
    if repo_id not in _hub_folders:
        from huggingface_hub import snapshot_download
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.md"]))
        except Exception as e:  # network, auth, missing repo: all reported the same way
            raise WeightsError(f"could not download {repo_id} from the Hub: {type(e).__name__}: {e}") from e
        if _missing(folder):
            raise WeightsError(f"{name}: the Hub repo {repo_id} has no {_missing(folder)[0]}. Publish it with "
                               f"`python -m training.{spec(name).task} push --weights weights/{name} "
                               f"--repo-id {repo_id}`")
        _hub_folders[repo_id] = folder
    return _hub_folders[repo_id]


def available(name: str) -> bool:
    return not _missing(local_dir(name)) if hub_org() is None else True


_cache: dict[str, Any] = {}
_lock = threading.Lock()


def load(name: str) -> Any:
    """Load a released model (cached per process), in eval mode, on the CPU."""
    with _lock:
        if name not in _cache:
            folder = resolve(name)
            cls = model_class(name)
            try:
                model = cls.from_pretrained(str(folder), strict=True)  # missing keys never serve random weights
            except Exception as e:  # corrupt json / safetensors, shape mismatch
                raise WeightsError(f"{name}: could not load {folder / 'model.safetensors'} "
                                   f"({type(e).__name__}: {str(e)[:200]}). Rebuild it with "
                                   f"`{spec(name).train_command}`") from e
            _cache[name] = model.eval()
        return _cache[name]


def card_metrics(name: str) -> dict[str, Any]:
    """The metrics a model card declares in its YAML (``model-index``), as ``{metric name: value}``."""
    folder = local_dir(name) if hub_org() is None else resolve(name)
    path = folder / "README.md"
    if not path.is_file():
        return {}
    from huggingface_hub import ModelCard
    try:
        card = ModelCard.load(path)
    except Exception:
        return {}
    return {r.metric_name or r.metric_type: r.metric_value for r in (card.data.eval_results or [])}


def write_card(folder: str | Path, name: str, *, description: str, metrics: dict[str, float],
               dataset: str, dataset_name: str, task_type: str, command: str, extra: str = "",
               license: str = "mit", tags: list[str] | None = None) -> None:
    """Write ``folder/README.md``: Hub model-card YAML (license, datasets, model-index) + a short body."""
    import datetime

    from huggingface_hub import EvalResult, ModelCard, ModelCardData
    results = [EvalResult(task_type=task_type, dataset_type=dataset, dataset_name=dataset_name,
                          metric_type=k, metric_name=k, metric_value=float(v)) for k, v in metrics.items()]
    data = ModelCardData(license=license, datasets=[dataset], tags=["pytorch", "model-zoo"] + (tags or []),
                         library_name="pytorch", model_name=name, eval_results=results)
    table = "\n".join(f"| {k} | {v:.4g} |" for k, v in metrics.items())
    body = (f"# {name}\n\n{description}\n\n## Measured\n\n| metric | value |\n|---|---|\n{table}\n\n"
            f"## Reproduce\n\n```bash\n{command}\n```\n\n{extra}\n\n"
            f"Trained by this project from scratch on {dataset_name}; card written "
            f"{datetime.date.today().isoformat()}.\n")
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}").save(Path(folder) / "README.md")


def save(model: Any, folder: str | Path, half: bool = True) -> None:
    """``save_pretrained`` into ``folder``, floating-point tensors stored as fp16 (loaded back as fp32).

    Files are written to a temporary sibling folder first and then each moved in with one atomic rename, so
    an interrupted save never leaves a half-written file behind. (Only a kill between the two renames, a
    window of microseconds, could pair a new config.json with the old weights; loading then fails on the
    shapes or loads the old model, and a rerun of the save mends it.)
    """
    import tempfile

    from safetensors.torch import load_file, save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        model.save_pretrained(tmp)
        weights = Path(tmp) / "model.safetensors"
        if half:  # fp16 halves the size; tensors outside fp16's range stay fp32
            tensors = {k: v.half() if v.is_floating_point() and (v.numel() == 0 or v.abs().max() < 6e4) else v
                       for k, v in load_file(weights).items()}
            save_file(tensors, weights, metadata={"format": "pt"})
        json.loads((Path(tmp) / "config.json").read_text())  # fail loudly on an unserializable config
        for f in REQUIRED_FILES:  # not the mixin's generated README: the trainer writes the card
            os.replace(Path(tmp) / f, folder / f)
