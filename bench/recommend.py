"""Latency of the Recommendations tab's serving path, on the shipped weights (CPU).

    python -m bench.recommend [--repeats 50] [--threads 1]

Measures (median and p90 over repeats, cache bypassed unless stated):
- a top-10 request for a new visitor with 10 ratings (fold-in + scoring + seen filter + reasons)
- a top-10 request for a known MovieLens user, uncached and cached
- the fold-in alone (BPR implicit ridge, MF explicit ridge)
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

import weights
from demos.recommend_service import Recommender, serve


def timeit(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        ranker, rater = weights.load("bpr-movielens"), weights.load("mf-movielens")
    except weights.WeightsError as e:
        raise SystemExit(f"error: {e}")
    rec = Recommender(ranker, rater)
    ratings = {m: r for m, r in zip([50, 181, 172, 174, 1, 100, 127, 98, 56, 7], [5, 5, 4, 5, 4, 3, 5, 4, 5, 4])}
    items = torch.tensor([m - 1 for m in ratings])
    values = torch.tensor(list(ratings.values()), dtype=torch.float32)

    def visitor(model: str) -> Callable[[], object]:
        def run() -> object:
            rec._cache.clear()
            return serve(rec, {"user": "bench", "ratings": ratings, "k": 10, "model": model})
        return run

    def known(model: str, cached: bool = False) -> Callable[[], object]:
        def run() -> object:
            if not cached:
                rec._cache.clear()
            return serve(rec, {"user": 42, "k": 10, "model": model})
        return run

    rows = {
        "new visitor top-10, BPR (fold-in + rank)": timeit(visitor("bpr"), args.repeats),
        "new visitor top-10, MF (fold-in + rank)": timeit(visitor("mf"), args.repeats),
        "known user top-10, BPR (uncached)": timeit(known("bpr"), args.repeats),
        "known user top-10, MF (uncached)": timeit(known("mf"), args.repeats),
        "known user top-10, BPR (cached)": timeit(known("bpr", cached=True), args.repeats),
        "fold-in only, BPR (10 liked)": timeit(lambda: ranker.fold_in(items), args.repeats),
        "fold-in only, MF (10 ratings)": timeit(lambda: rater.fold_in(items, values), args.repeats),
    }
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} repeats, "
          f"{ranker.config.n_items} movies, dim {ranker.config.dim} (BPR) / {rater.config.dim} (MF)")
    width = max(map(len, rows))
    for name, r in rows.items():
        print(f"{name:<{width}}  median {r['median_ms']:7.3f} ms   p90 {r['p90_ms']:7.3f} ms")


if __name__ == "__main__":
    main()
