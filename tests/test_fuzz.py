"""Fuzz every API endpoint of the real app (found through ``view_api``, so new tabs are covered).

Each endpoint gets a base request (its defaults; sliders at their minimum so calls stay cheap; images a
small PNG), then one case per hostile value put into one parameter at a time: wrong JSON types, empty
values, unicode, megabyte strings, out-of-range and non-finite numbers, unknown choices, malformed
tables, and broken or extreme image files (truncated, corrupt, 1x1, a 10000x10000 decompression bomb,
CMYK, 16-bit, float, animated). Plus whole-request cases: missing and extra arguments.

Every answer must be a valid result, a clear ``gr.Error`` (a message, and no other exception in the
server log), or - only for values of the wrong JSON type - a rejection by Gradio's own validation.
Afterwards the endpoints that worked before must still work. Calls go over the raw HTTP API
(``/gradio_api/call/<name>``) so that any JSON value can be sent, exactly as a hostile client would.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from gradio_client import Client

import fuzz_inputs as fz
from conftest import ARTIFACTS

CALL_TIMEOUT = 300  # seconds per call: a clamped 2000-character generation on a busy CPU
LOG = ARTIFACTS / "app.log"  # the log of the session app (conftest.app_url)
# Gradio's own refusals of a malformed request (wrong JSON types, missing arguments).
FRAMEWORK_REJECTIONS = ("gradio.exceptions.", "pydantic_core._pydantic_core.ValidationError",
                        "ValueError: An event handler")


# --------------------------------------------------------------------------- raw API calls

def upload(url: str, path: Path) -> dict[str, Any]:
    """Upload a file; return the FileData payload that refers to it."""
    with open(path, "rb") as f:
        r = requests.post(f"{url}gradio_api/upload", files=[("files", (path.name, f))], timeout=60)
    r.raise_for_status()
    return {"path": r.json()[0], "orig_name": path.name, "size": path.stat().st_size,
            "meta": {"_type": "gradio.FileData"}}


def call(url: str, api_name: str, data: Any) -> tuple[str, str]:
    """POST the data, follow the event stream: ('ok', result) | ('error', message) | ('rejected', reason)."""
    r = requests.post(f"{url}gradio_api/call/{api_name.lstrip('/')}", json={"data": data}, timeout=60)
    if r.status_code != 200:
        assert r.status_code < 500, f"{api_name}: HTTP {r.status_code} {r.text[:300]}"
        return "rejected", f"HTTP {r.status_code}: {r.text[:200]}"
    event_id = r.json()["event_id"]
    event = None
    with requests.get(f"{url}gradio_api/call/{api_name.lstrip('/')}/{event_id}", stream=True,
                      timeout=CALL_TIMEOUT) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = json.loads(line.split(":", 1)[1])
                if event == "complete":
                    return "ok", json.dumps(payload)[:200]
                return "error", (payload or {}).get("error") or ""
    return "error", f"stream ended without a result (last event {event})"


def final_exceptions(log: str) -> list[str]:
    """The ``Type: message`` line ending each exception chain in a log (gradio prints even gr.Errors)."""
    lines = log.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")]
    found = []
    for n, i in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        body = lines[i + 1:end]
        rest = [ln for ln in body if ln and not ln[0].isspace() and not set(ln) <= {"^", "~", " "}]
        chained = any(ln.startswith(("The above exception was the direct cause",
                                     "During handling of the above exception")) for ln in body)
        if rest and not chained:
            found.append(rest[0])
    return found


# --------------------------------------------------------------------------- cases

def choices_of(param: dict[str, Any]) -> list[Any]:
    t = param.get("type", {})
    return t.get("enum") or t.get("items", {}).get("enum") or []


def has_file(value: Any) -> bool:
    if isinstance(value, dict):
        return "path" in value or "url" in value or any(has_file(v) for v in value.values())
    return isinstance(value, list) and any(has_file(v) for v in value)


def with_file(value: Any, file: dict[str, Any]) -> Any:
    """``value`` with every file reference in it replaced by ``file`` (e.g. an ImageEditor's layers)."""
    if isinstance(value, dict) and ("path" in value or "url" in value):
        return file
    if isinstance(value, dict):
        return {k: with_file(v, file) for k, v in value.items()}
    if isinstance(value, list):
        return [with_file(v, file) for v in value]
    return value


def value_cases(param: dict[str, Any], base: Any, images: dict[str, dict]) -> list[tuple[str, Any]]:
    """(name, value) hostile values of the right JSON type for one parameter."""
    component = param["component"].lower()
    if component != "image" and has_file(base):  # an image editor, a sketchpad...: each file in every slot
        return [(name, with_file(base, image)) for name, image in images.items()]
    if component in ("textbox", "code", "markdown", "html"):
        values = fz.text_values()
    elif component in ("slider", "number"):
        values = fz.number_values()
    elif component == "checkbox":
        values = fz.bool_values()
    elif component in ("radio", "dropdown") and param["python_type"]["type"].startswith("list["):
        values = fz.multiselect_values(choices_of(param))
    elif component in ("radio", "dropdown"):
        values = fz.choice_values(choices_of(param))
    elif component == "dataframe":
        values = fz.dataframe_values()
    elif component == "image":
        return list(images.items())
    else:  # a component this harness does not know yet: wrong types only
        return []
    return [(_short(v), v) for v in values]


def type_cases(param: dict[str, Any], base: Any) -> list[tuple[str, Any]]:
    """(name, value) values of the wrong JSON type or shape for one parameter; for a file input, also file
    references the client did not upload (a path outside the app, ../ traversal, data and http URLs)."""
    component = param["component"].lower()
    extra = {"slider": fz.number_type_values(), "number": fz.number_type_values(),
             "dataframe": fz.dataframe_type_values()}.get(component, [])
    cases = [(_short(v), v) for v in fz.WRONG_TYPES + extra]
    if component in ("image", "file", "audio", "video", "model3d", "gallery") or has_file(base):
        meta = {"_type": "gradio.FileData"}
        app_py = str(Path(__file__).resolve().parent.parent / "app.py")
        files = [("FileData /etc/passwd", {"path": "/etc/passwd", "meta": meta}),
                 ("FileData ../ traversal", {"path": "../../../../../../etc/passwd", "meta": meta}),
                 ("FileData app.py", {"path": app_py, "meta": meta}),
                 ("FileData corrupt data: URL", {"path": None, "url": "data:image/png;base64,AAAA", "meta": meta}),
                 ("FileData unreachable URL", {"path": None, "url": "http://127.0.0.1:9/x.png", "meta": meta}),
                 ("FileData no path", {"meta": meta})]
        nested = component != "image" and has_file(base)  # e.g. the layers of an image editor
        cases += [(name, with_file(base, f) if nested else f) for name, f in files]
    return cases


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else f"{s[:30]}...({len(s):,} chars)"


def base_args(param: dict[str, Any], normal_image: dict[str, Any]) -> Any:
    """A valid value: the default, a slider's minimum (fewest tokens/steps: cheap calls), a small PNG (also
    in place of the URLs of gradio's example inputs: the test never leaves 127.0.0.1)."""
    if param["component"].lower() == "image":
        return normal_image
    if param["component"].lower() == "slider" and param.get("example_input") is not None:
        return param["example_input"]
    if param.get("parameter_has_default") and param["parameter_default"] not in (None, [], ""):
        return with_file(param["parameter_default"], normal_image)
    return with_file(param.get("example_input"), normal_image)  # e.g. one movie, not an empty multiselect


def cases_for(params: list[dict], base: list[Any], images: dict[str, dict]
              ) -> Iterator[tuple[str, str, list[Any] | Any]]:
    """(kind, description, data) for one endpoint; kind "type" allows a framework rejection."""
    yield "type", "no arguments", []
    yield "type", "one extra argument", [*base, "extra"]
    yield "type", "data is not a list", {"not": "a list"}
    if base:
        yield "type", "missing last argument", base[:-1]
    for i, param in enumerate(params):
        for kind, cases in (("value", value_cases(param, base[i], images)), ("type", type_cases(param, base[i]))):
            for name, value in cases:
                yield kind, f"{param['parameter_name']}={name}", [*base[:i], value, *base[i + 1:]]


@pytest.fixture(scope="module")
def fuzz_files(app_url, tmp_path_factory) -> tuple[dict[str, Any], dict[str, dict]]:
    folder = tmp_path_factory.mktemp("fuzz-images")
    normal = upload(app_url, fz.normal_image(folder))
    images = {name: upload(app_url, path) for name, path in fz.image_files(folder).items()}
    return normal, images


def test_every_endpoint_answers_hostile_input_clearly_and_stays_healthy(app_url, fuzz_files):
    normal_image, images = fuzz_files
    api = Client(app_url, verbose=False, download_files=False).view_api(return_format="dict", print_info=False)
    endpoints = {name: info["parameters"] for name, info in api["named_endpoints"].items()}
    bases = {name: [base_args(p, normal_image) for p in params] for name, params in endpoints.items()}
    working = [name for name in endpoints if call(app_url, name, bases[name])[0] == "ok"]
    print(f"\nendpoints: {len(endpoints)}; working with a normal request before fuzzing: {working}")

    failures, table, record = [], {}, []
    for name, params in endpoints.items():
        outcomes: Counter[str] = Counter()
        for kind, description, data in cases_for(params, bases[name], images):
            before = LOG.stat().st_size
            try:
                status, message = call(app_url, name, data)
            except requests.Timeout:
                failures.append(f"{name} {description}: no answer within {CALL_TIMEOUT}s")
                continue
            time.sleep(0.05)  # let the server finish printing its traceback
            with open(LOG, errors="replace") as f:
                f.seek(before)
                raised = final_exceptions(f.read())
            outcomes[status] += 1
            record.append({"endpoint": name, "kind": kind, "case": description, "status": status,
                           "message": message[:300]})
            problem = None
            if status == "error":
                allowed = ("gradio.exceptions.Error",) + (FRAMEWORK_REJECTIONS if kind == "type" else ())
                crashes = [e for e in raised if not e.startswith(allowed)]
                if crashes:
                    problem = f"crashed: {crashes[0][:300]}"
                elif not message.strip() or message == "Error raised.":
                    problem = "failed without a message"
            elif status == "ok" and raised:
                problem = f"succeeded but logged {raised[0][:200]}"
            if problem:
                failures.append(f"{name} [{kind}] {description}: {problem} (client saw: {message[:200]!r})")
        table[name] = outcomes
    (ARTIFACTS / "fuzz_outcomes.json").write_text(json.dumps(record, indent=1))
    print(f"{'endpoint':28s} {'cases':>6s} {'ok':>5s} {'error':>6s} {'rejected':>9s}")
    for name, c in table.items():
        print(f"{name:28s} {sum(c.values()):6d} {c['ok']:5d} {c['error']:6d} {c['rejected']:9d}")
    print(f"{'total':28s} {sum(sum(c.values()) for c in table.values()):6d}")
    assert not failures, f"{len(failures)} unclear answers:\n" + "\n".join(failures[:40])

    assert requests.get(app_url, timeout=30).status_code == 200
    for name in working:  # still healthy: the same normal requests still work
        status, message = call(app_url, name, bases[name])
        assert status == "ok", f"{name} stopped working after the fuzzing: {message}"
