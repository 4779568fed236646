"""Load test: N concurrent ``gradio_client`` clients calling every API endpoint of the real app.

    python -m bench.load [--clients 1 4 16] [--seconds 120] [--url http://127.0.0.1:7860/]

Without ``--url`` it serves ``app.py`` on a free 127.0.0.1 port itself (never another host). Endpoints
are found through ``view_api``, so new tabs are covered; each is called with its default inputs (a small
PNG for an image, the example value for an empty multiselect). Endpoints whose normal request fails
(weights not trained yet) are skipped and listed. Each client cycles through the endpoints, starting at
a different one, until the time is up; the table gives latency percentiles over all requests, failed
requests and the server's peak resident memory (``VmHWM``: since the server started).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from bench.common import AppStartError, app_server

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- the server

@contextlib.contextmanager
def serve(log_path: Path, timeout: float = 240) -> Iterator[tuple[str, int]]:
    """``python app.py`` on 127.0.0.1 in a subprocess; yields (url, pid) once it answers."""
    try:
        with app_server(log_path, timeout=timeout) as (url, proc):
            yield url, proc.pid
    except AppStartError as e:
        raise SystemExit(f"error: {e}") from None


def listening_pid(port: int) -> int | None:
    """The pid of the local process listening on TCP ``port`` (Linux /proc; None if not found)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                    inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(pid)
    return None


def memory_mb(pid: int | None, field: str = "VmRSS") -> float:
    """A memory figure of a process from /proc/<pid>/status, in MiB (nan when unavailable)."""
    with contextlib.suppress(OSError, TypeError):
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------- the requests

def sample_image(folder: Path) -> Path:
    from PIL import Image
    gradient = Image.linear_gradient("L").resize((64, 64))
    path = folder / "load.png"
    Image.merge("RGB", [gradient, gradient.rotate(90), gradient.rotate(180)]).save(path)
    return path


def with_local_files(value: Any, image: Path) -> Any:
    """``value`` with every file reference in it (gradio's example inputs point at URLs on GitHub) replaced
    by the local sample image: the load test never leaves 127.0.0.1."""
    from gradio_client import handle_file
    if isinstance(value, dict) and ("path" in value or "url" in value):
        return handle_file(str(image))
    if isinstance(value, dict):
        return {k: with_local_files(v, image) for k, v in value.items()}
    if isinstance(value, list):
        return [with_local_files(v, image) for v in value]
    return value


def default_args(params: list[dict[str, Any]], image: Path) -> list[Any] | None:
    """A normal request for an endpoint; None when some input has no usable value."""
    from gradio_client import handle_file
    args = []
    for p in params:
        if p["component"].lower() == "image":
            args.append(handle_file(str(image)))
        elif p.get("parameter_has_default") and p["parameter_default"] not in (None, [], ""):
            args.append(with_local_files(p["parameter_default"], image))
        elif p.get("example_input") is not None and p["component"].lower() not in ("file", "audio", "video"):
            args.append(with_local_files(p["example_input"], image))
        else:
            return None
    return args


def client_for(url: str):
    from gradio_client import Client
    return Client(url, verbose=False, download_files=False)


def working_endpoints(url: str, image: Path) -> tuple[dict[str, list[Any]], dict[str, str], set[str]]:
    """({api_name: args} of endpoints whose normal request succeeds, {api_name: why skipped}, names of those
    that only work in a session that made the earlier calls). Endpoints are called in the API's order, so
    one that reads session state (a slider scrubbing a generated sample) follows the call that fills it."""
    client, fresh = client_for(url), client_for(url)
    api = client.view_api(return_format="dict", print_info=False)
    working, skipped, needs_session = {}, {}, set()
    for name, info in api["named_endpoints"].items():
        args = default_args(info["parameters"], image)
        if args is None:
            skipped[name] = "an input has no default"
            continue
        try:
            client.predict(*args, api_name=name)
            working[name] = args
        except Exception as e:  # e.g. weights not trained yet: a clear gr.Error, not a load failure
            skipped[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
            continue
        fresh.reset_session()
        try:
            fresh.predict(*args, api_name=name)
        except Exception:
            needs_session.add(name)
    return working, skipped, needs_session


def slowest_and_fastest(row: dict[str, Any], exclude: set[str] = frozenset()) -> tuple[str, str]:
    """The endpoints with the highest and the lowest median latency in a ``run_load`` row."""
    by_speed = sorted((e["p50_ms"], n) for n, e in row["per_endpoint"].items() if e["n"] and n not in exclude)
    return by_speed[-1][1], by_speed[0][1]


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = math.ceil(q / 100 * len(sorted_values))  # nearest rank
    return sorted_values[min(len(sorted_values) - 1, max(0, rank - 1))]


def run_load(url: str, endpoints: dict[str, list[Any]], clients: int, seconds: float,
             pid: int | None = None) -> dict[str, Any]:
    """``clients`` threads, each with its own gradio_client, cycling through ``endpoints`` for ``seconds``
    (a request under way at the deadline is finished). Latencies in ms, memory in MiB."""
    names = list(endpoints)  # in probe order: see working_endpoints
    latencies: dict[str, list[float]] = {n: [] for n in names}
    errors: list[str] = []
    lock, stop = threading.Lock(), threading.Event()
    peak_rss = [memory_mb(pid)]

    def sample_memory() -> None:
        while not stop.wait(0.2):
            peak_rss[0] = max(peak_rss[0], memory_mb(pid))

    def worker(i: int) -> None:
        try:
            client = client_for(url)
        except Exception as e:
            with lock:
                errors.append(f"client {i} could not connect: {e}")
            return
        deadline, k = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            name = names[k % len(names)]
            k += 1
            start = time.perf_counter()
            try:
                client.predict(*endpoints[name], api_name=name)
            except Exception as e:
                with lock:
                    errors.append(f"{name}: {type(e).__name__}: {str(e)[:200]}")
                continue
            with lock:
                latencies[name].append((time.perf_counter() - start) * 1000)

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    everything = sorted(x for v in latencies.values() for x in v)
    return {"clients": clients, "seconds": round(wall, 1), "requests": len(everything) + len(errors),
            "failed": len(errors), "rps": round(len(everything) / wall, 2),
            "p50_ms": percentile(everything, 50), "p95_ms": percentile(everything, 95),
            "p99_ms": percentile(everything, 99), "peak_rss_mb": peak_rss[0],
            "peak_rss_since_start_mb": memory_mb(pid, "VmHWM"),
            "per_endpoint": {n: {"n": len(v), "p50_ms": percentile(sorted(v), 50)} for n, v in latencies.items()},
            "errors": errors[:10]}


def starvation_check(url: str, endpoints: dict[str, list[Any]], slow: str, fast: str, n_slow: int = 8
                     ) -> dict[str, Any]:
    """Queue ``n_slow`` requests of the slow endpoint, then make one fast request: with per-event
    concurrency groups the fast one is served while slow ones are still waiting or running."""
    from gradio_client.utils import Status
    client = client_for(url)
    jobs = [client.submit(*endpoints[slow], api_name=slow) for _ in range(n_slow)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(
            j.status().code in (Status.STARTING, Status.JOINING_QUEUE) for j in jobs):
        time.sleep(0.05)  # until every slow request is in the server's queue
    start = time.perf_counter()
    client.predict(*endpoints[fast], api_name=fast)
    fast_ms = (time.perf_counter() - start) * 1000
    pending = sum(not j.done() for j in jobs)
    for j in jobs:
        j.result(timeout=600)
    return {"slow": slow, "fast": fast, "n_slow": n_slow, "fast_ms": fast_ms, "slow_still_pending": pending}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| clients | requests | failed | req/s | p50 ms | p95 ms | p99 ms | peak RSS MiB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['clients']} | {r['requests']} | {r['failed']} | {r['rps']:.1f} | {r['p50_ms']:.0f} | "
                     f"{r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def endpoint_table(rows: list[dict[str, Any]]) -> str:
    names = sorted({n for r in rows for n in r["per_endpoint"]})
    head = "| endpoint | " + " | ".join(f"p50 ms @{r['clients']}" for r in rows) + " |"
    lines = [head, "|---|" + "---:|" * len(rows)]
    for n in names:
        cells = [f"{r['per_endpoint'][n]['p50_ms']:.0f} (n={r['per_endpoint'][n]['n']})" for r in rows]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measure(url: str, pid: int | None, clients: list[int], seconds: float) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        endpoints, skipped, needs_session = working_endpoints(url, sample_image(Path(tmp)))
        for name, why in skipped.items():
            print(f"skipped {name}: {why}")
        if not endpoints:
            raise SystemExit("error: no endpoint answers a normal request")
        print(f"endpoints under load: {', '.join(sorted(endpoints))}")
        rows = []
        for n in clients:
            rows.append(run_load(url, endpoints, n, seconds, pid))
            r = rows[-1]
            print(f"N={n}: {r['requests']} requests, {r['failed']} failed, p50 {r['p50_ms']:.0f} ms, "
                  f"p99 {r['p99_ms']:.0f} ms, peak RSS {r['peak_rss_mb']:.0f} MiB", flush=True)
            for e in r["errors"]:
                print(f"  failed: {e}")
        slow, fast = slowest_and_fastest(rows[0], exclude=needs_session)
        c = starvation_check(url, endpoints, slow, fast)
        print(f"starvation check: {c['n_slow']} x {slow} queued, then {fast} answered in {c['fast_ms']:.0f} ms "
              f"with {c['slow_still_pending']} of them still waiting or running")
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=120, help="per number of clients")
    parser.add_argument("--url", help="an app already served on this machine (default: start one)")
    args = parser.parse_args()
    if args.url:
        from urllib.parse import urlparse
        host = urlparse(args.url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("error: the load test only targets 127.0.0.1")
        url = args.url.rstrip("/") + "/"
        rows = measure(url, listening_pid(urlparse(url).port or 80), args.clients, args.seconds)
    else:
        log = ROOT / "logs" / "bench-load-app.log"
        log.parent.mkdir(exist_ok=True)
        with serve(log) as (url, pid):
            rows = measure(url, pid, args.clients, args.seconds)
    print(f"\n{args.seconds:.0f} s per row, {os.cpu_count()} CPU cores\n")
    print(table(rows))
    print()
    print(endpoint_table(rows))
    if any(r["failed"] for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
