"""Latency of the Recommendations tab's serving path, on the shipped weights (CPU).

    python -m bench.recommend [--repeats 50] [--threads 1]

Measures (median and p90 over repeats, cache bypassed unless stated):
- a top-10 request for a new visitor with 10 ratings (fold-in + scoring + seen filter + reasons)
- a top-10 request for a known MovieLens user, uncached and cached
- the fold-in alone (BPR implicit ridge, MF explicit ridge)
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

import torch

import weights
from bench.common import timeit
from demos.recommend_service import Recommender, serve

TAB = "Recommendations"


def run(repeats: int = 50, threads: int = 1) -> list[dict[str, Any]]:
    """One row per measured request: {tab, case, median_ms, p90_ms, note}."""
    torch.set_num_threads(threads)
    ranker, rater = weights.load("bpr-movielens"), weights.load("mf-movielens")
    rec = Recommender(ranker, rater)
    ratings = {m: r for m, r in zip([50, 181, 172, 174, 1, 100, 127, 98, 56, 7], [5, 5, 4, 5, 4, 3, 5, 4, 5, 4])}
    items = torch.tensor([m - 1 for m in ratings])
    values = torch.tensor(list(ratings.values()), dtype=torch.float32)

    def visitor(model: str) -> Callable[[], object]:
        def call() -> object:
            rec._cache.clear()
            return serve(rec, {"user": "bench", "ratings": ratings, "k": 10, "model": model})
        return call

    def known(model: str, cached: bool = False) -> Callable[[], object]:
        def call() -> object:
            if not cached:
                rec._cache.clear()
            return serve(rec, {"user": 42, "k": 10, "model": model})
        return call

    cases = {
        "new visitor top-10, BPR (fold-in + rank)": visitor("bpr"),
        "new visitor top-10, MF (fold-in + rank)": visitor("mf"),
        "known user top-10, BPR (uncached)": known("bpr"),
        "known user top-10, MF (uncached)": known("mf"),
        "known user top-10, BPR (cached)": known("bpr", cached=True),
        "fold-in only, BPR (10 liked)": lambda: ranker.fold_in(items),
        "fold-in only, MF (10 ratings)": lambda: rater.fold_in(items, values),
    }
    note = (f"{threads} thread(s), {ranker.config.n_items} movies, dim {ranker.config.dim} (BPR) / "
            f"{rater.config.dim} (MF)")
    return [{"tab": TAB, "case": name, **timeit(fn, repeats), "note": note} for name, fn in cases.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    try:
        rows = run(args.repeats, args.threads)
    except weights.WeightsError as e:
        raise SystemExit(f"error: {e}")
    print(f"torch {torch.__version__}, {args.repeats} repeats, {rows[0]['note']}")
    width = max(len(r["case"]) for r in rows)
    for r in rows:
        print(f"{r['case']:<{width}}  median {r['median_ms']:7.3f} ms   p90 {r['p90_ms']:7.3f} ms")


if __name__ == "__main__":
    main()
