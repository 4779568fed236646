"""Short CI version of the load test (``python -m bench.load`` runs the full one): 1 and 4 concurrent
``gradio_client`` clients cycle through every working API endpoint of the real app for a few seconds
each, with no failed request; latency percentiles and the server's peak memory are printed. Also: the
queue gives each tab its own bounded concurrency group, so a slow tab cannot starve a fast one."""
from __future__ import annotations

from urllib.parse import urlparse

import pytest

from bench.load import (listening_pid, run_load, sample_image, slowest_and_fastest, starvation_check, table,
                        working_endpoints)

CLIENTS = (1, 4)
SECONDS = 10  # per number of clients


@pytest.fixture(scope="module")
def load_app_url():
    """A server of its own: the session app has served the browser and fuzz tests, whose queued work
    would skew the latencies and the starvation check measured here."""
    from conftest import serve_app
    with serve_app("app-load") as url:
        yield url


def test_concurrent_clients_on_every_endpoint_never_fail(load_app_url, tmp_path):
    app_url = load_app_url
    endpoints, skipped, needs_session = working_endpoints(app_url, sample_image(tmp_path))
    print(f"\nunder load: {sorted(endpoints)}\nneeding earlier calls in their session: {sorted(needs_session)}"
          f"\nskipped (no weights / no default input): {skipped}")
    assert endpoints, "no endpoint answers a normal request"
    pid = listening_pid(urlparse(app_url).port)
    rows = [run_load(app_url, endpoints, n, SECONDS, pid) for n in CLIENTS]
    print(table(rows))
    for row in rows:
        assert row["requests"] > 0
        assert row["failed"] == 0, f"{row['failed']} failed requests with {row['clients']} clients: {row['errors']}"

    # a fresh client queues the slow requests: one needing earlier calls in its session would fail
    slow, fast = slowest_and_fastest(rows[0], exclude=needs_session)
    per = rows[0]["per_endpoint"]
    if per[slow]["p50_ms"] < 3 * per[fast]["p50_ms"]:
        pytest.skip(f"no endpoint is much slower than {fast} here; starvation not testable")
    check = starvation_check(app_url, endpoints, slow, fast)
    print(check)
    assert check["slow_still_pending"] > 0, f"{fast} waited for all queued {slow} requests: {check}"


def test_each_tab_has_its_own_bounded_concurrency_group():
    import app
    blocks = app.build_app()
    groups: dict[str, set[str]] = {}
    for fn in blocks.fns.values():
        if not fn.queue or not fn.api_name:
            continue
        limit = app.DEFAULT_CONCURRENCY if fn.concurrency_limit == "default" else fn.concurrency_limit
        assert isinstance(limit, int) and limit >= 1, f"{fn.api_name}: unbounded concurrency ({limit})"
        groups.setdefault(str(fn.concurrency_id), set()).add(fn.fn.__module__)
    shared = {gid: mods for gid, mods in groups.items() if len(mods) > 1}
    assert not shared, f"queue groups shared between tabs (a slow tab would block the other): {shared}"
