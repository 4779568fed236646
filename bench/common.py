"""Timing helpers shared by the benchmarks: medians over repeats after a warm-up."""
from __future__ import annotations

import contextlib
import os
import math
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator


def timeit(fn: Callable[[], object], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; median and p90 (nearest rank: with fewer
    than 10 repeats, the slowest) in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[math.ceil(0.9 * len(times)) - 1]}


ROOT = Path(__file__).resolve().parent.parent


class AppStartError(RuntimeError):
    """The app subprocess exited or did not answer HTTP in time."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def app_server(log_path: Path, env: dict[str, str] | None = None,
               timeout: float = 240) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python app.py`` on 127.0.0.1 and a free port in a subprocess (output to ``log_path``); yields
    (url, process) once it answers HTTP, stops it afterwards. AppStartError (with the log's tail) if it
    exits or does not answer within ``timeout`` seconds. Used by the load benchmark and the tests."""
    import requests
    port = free_port()
    full_env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("GRADIO_SERVER_PORT", None)
    full_env.pop("GRADIO_SERVER_NAME", None)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)],
                                cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise AppStartError(f"the app exited with {proc.returncode}:\n{Path(log_path).read_text()[-4000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=2).status_code == 200:
                    break
            if time.time() > deadline:
                raise AppStartError(f"the app did not answer within {timeout:.0f}s:\n"
                                   f"{Path(log_path).read_text()[-4000:]}")
            time.sleep(0.5)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
