"""MovieLens-100K: reading the files, downloading the official zip, and the evaluation splits.

GroupLens' licence forbids redistributing the ratings, so nothing here is ever written into the repo:
the loader reads ``../shared/datasets/ml-100k`` (or any folder) and can fetch the zip for a user.
Ids are turned 0-based (user 1 -> 0, movie 1 -> 0).
"""
from __future__ import annotations

import io
import re
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.common import default_data

URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
N_USERS, N_ITEMS = 943, 1682
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western"]


def default_path() -> Path:
    return default_data("ml-100k")


def download(root: str | Path) -> Path:
    """Fetch and unpack the official zip so that ``root`` holds ``u.data`` etc.; returns ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(URL, timeout=60) as r:
        data = r.read()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for member in z.namelist():
            if member.endswith("/"):
                continue
            (root / Path(member).name).write_bytes(z.read(member))
    return root


def check(root: str | Path, download_missing: bool = False) -> Path:
    root = Path(root)
    if not (root / "u.data").is_file():
        if not download_missing:
            raise FileNotFoundError(f"{root / 'u.data'} not found: pass --data DIR pointing at an unpacked "
                                    f"ml-100k folder, or add --download to fetch {URL}")
        download(root)
    return root


@dataclass
class Ratings:
    """Parallel arrays, one entry per rating (0-based ids)."""
    users: np.ndarray    # int64
    items: np.ndarray    # int64
    ratings: np.ndarray  # float32, 1..5

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, mask_or_index: np.ndarray) -> "Ratings":
        return Ratings(self.users[mask_or_index], self.items[mask_or_index], self.ratings[mask_or_index])


def load_ratings(root: str | Path, file: str = "u.data") -> Ratings:
    """``u.data`` (all 100,000) or a split file such as ``u1.base`` / ``u1.test``."""
    a = np.loadtxt(Path(root) / file, dtype=np.int64, usecols=(0, 1, 2))
    return Ratings(a[:, 0] - 1, a[:, 1] - 1, a[:, 2].astype(np.float32))


@dataclass
class Movies:
    titles: list[str]         # "Toy Story (1995)"; latin-1 in the file
    years: list[int]          # 0 where unknown
    genres: list[list[str]]


def load_movies(root: str | Path) -> Movies:
    titles, years, genres = [], [], []
    for line in (Path(root) / "u.item").read_bytes().decode("latin-1").splitlines():
        if not line.strip():
            continue
        f = line.split("|")
        titles.append(f[1])
        date = f[2].strip()  # the release date, sometimes a re-release: prefer the title's "(1983)"
        match = re.search(r"\((\d{4})\)\s*$", f[1])
        years.append(int(match.group(1)) if match else int(date[-4:]) if date[-4:].isdigit() else 0)
        genres.append([g for g, flag in zip(GENRES, f[5:24]) if flag == "1"])
    return Movies(titles, years, genres)


def stratified_split(data: Ratings, ratio: float = 0.75, seed: int = 42) -> tuple[Ratings, Ratings]:
    """Per-user random split (the ``recommenders`` benchmark's ``python_stratified_split``): each user keeps
    ``round(ratio * n_u)`` of their ratings in train and the rest in test."""
    rng = np.random.default_rng(seed)
    train = np.zeros(len(data), dtype=bool)
    order = np.argsort(data.users, kind="stable")
    bounds = np.flatnonzero(np.diff(data.users[order])) + 1
    for group in np.split(order, bounds):
        group = rng.permutation(group)
        train[group[:int(round(ratio * len(group)))]] = True
    return data.subset(train), data.subset(~train)


def random_split(data: Ratings, fraction: float = 0.1, seed: int = 0) -> tuple[Ratings, Ratings]:
    """Hold out ``fraction`` of the ratings uniformly at random (the validation split for tuning)."""
    held = np.random.default_rng(seed).random(len(data)) < fraction
    return data.subset(~held), data.subset(held)


def seen_lists(data: Ratings, n_users: int = N_USERS) -> list[np.ndarray]:
    """Sorted item ids each user rated."""
    order = np.lexsort((data.items, data.users))
    counts = np.bincount(data.users, minlength=n_users)
    return np.split(data.items[order], np.cumsum(counts)[:-1])
