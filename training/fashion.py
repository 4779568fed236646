"""Fashion-MNIST as uint8 tensors, read from the idx ``.gz`` files.

Debian's ``dataset-fashion-mnist`` package installs them under ``/usr/share/datasets/fashion-mnist/``;
without them, torchvision downloads the official files into ``data_cache/fashion-mnist``.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from training.common import ROOT

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CACHE = ROOT / "data_cache" / "fashion-mnist"
CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle boot")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: str | Path) -> np.ndarray:
    """One idx file (optionally gzipped): magic (0, 0, dtype 0x08 = uint8, ndim), big-endian dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 idx file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, file holds {body.size} values")
    return body.reshape(dims)


def _find(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def load_fashion(split: str, root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``train`` (60,000) or ``test`` (10,000): uint8 images (N,28,28), int64 labels (N,).

    ``root`` holds the four idx files (default the Debian package's folder); when the default folder
    lacks them, torchvision downloads them. An explicit ``root`` without the files is an error.
    """
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    explicit = root is not None
    folder = Path(root) if explicit else DEFAULT_ROOT
    images_stem, labels_stem = FILES[split]
    paths = [_find(folder, images_stem), _find(folder, labels_stem)]
    if None in paths and not explicit:
        paths = [_find(CACHE / "FashionMNIST" / "raw", images_stem), _find(CACHE / "FashionMNIST" / "raw", labels_stem)]
        if None in paths:
            try:
                from torchvision.datasets import FashionMNIST
                FashionMNIST(str(CACHE), train=split == "train", download=True)
            except Exception as e:
                raise FileNotFoundError(
                    f"Fashion-MNIST not found in {DEFAULT_ROOT} (apt install dataset-fashion-mnist) and the "
                    f"download failed: {type(e).__name__}: {e}") from e
            paths = [_find(CACHE / "FashionMNIST" / "raw", images_stem),
                     _find(CACHE / "FashionMNIST" / "raw", labels_stem)]
    if None in paths:
        raise FileNotFoundError(f"{folder} lacks {images_stem}[.gz] / {labels_stem}[.gz] (Fashion-MNIST idx files)")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{folder}: images {images.shape} and labels {labels.shape} do not match")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))
