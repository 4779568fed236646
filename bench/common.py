"""Timing helpers shared by the benchmarks: medians over repeats after a warm-up."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def timeit(fn: Callable[[], object], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; median and p90 in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))]}
