"""End to end: the real app as a subprocess on 127.0.0.1, called through its API with gradio_client.

Every endpoint whose inputs all have defaults is smoke-called; a failure is acceptable only as a clear
``gr.Error`` (a message for the user, no traceback in the server log). A second instance serves a copy of
``weights/`` in which every model.safetensors is corrupt: the About tab keeps working and every model
endpoint reports the broken file and the command that rebuilds it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError, ValidationError

import weights
from conftest import ARTIFACTS, serve_app

CALL_TIMEOUT = 180  # seconds per smoke call (a tab may generate on a busy CPU)


def client_for(url: str) -> Client:
    return Client(url, verbose=False, download_files=False)


def check_about(client: Client) -> list[list]:
    table = client.predict(api_name="/about_models")
    assert table["headers"] == ["model", "what", "status", "measured"]
    assert [row[0] for row in table["data"]] == list(weights.MODELS)
    for row in table["data"]:
        assert row[2] == "ready" or row[2].startswith("not trained yet: run `python -m training.")
    return table["data"]


def defaultable_endpoints(client: Client) -> list[str]:
    api = client.view_api(return_format="dict", print_info=False)
    return [name for name, info in api["named_endpoints"].items()
            if all(p.get("parameter_has_default") for p in info["parameters"])]


def raised_exceptions(log: str) -> list[str]:
    """The final ``Type: message`` line of every traceback in a log (gradio prints one even for gr.Error)."""
    found, lines = [], log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            rest = [ln for ln in lines[i + 1:] if ln and not ln[0].isspace() and not set(ln) <= {"^", "~", " "}]
            if rest:
                found.append(rest[0])
    return found


def smoke_call_all(client: Client, log: Path) -> dict[str, str | None]:
    """Call each defaultable endpoint; return {api_name: None on success, else the error message}."""
    outcomes: dict[str, str | None] = {}
    for name in defaultable_endpoints(client):
        before = len(log.read_text())
        try:
            client.submit(api_name=name).result(timeout=CALL_TIMEOUT)
            outcomes[name] = None
        except ValidationError as e:  # a button's validator: no photo (shown at the photo box in the browser)
            outcomes[name] = str(e)
        except AppError as e:
            outcomes[name] = str(e)
            new_log = log.read_text()[before:]
            crashes = [e for e in raised_exceptions(new_log) if not e.startswith("gradio.exceptions.Error")]
            assert not crashes, f"{name} crashed instead of raising gr.Error:\n{new_log[-3000:]}"
            assert str(e).strip() and str(e) != "Error raised.", f"{name} failed without a message"
    return outcomes


def test_about_and_every_defaultable_endpoint(app_url):
    client = client_for(app_url)
    rows = check_about(client)
    for name, _, status, _ in rows:  # the table tells the truth about the shipped folders
        assert (status == "ready") == weights.available(name)
    outcomes = smoke_call_all(client, ARTIFACTS / "app.log")
    assert "/about_models" in outcomes and outcomes["/about_models"] is None
    (ARTIFACTS / "e2e_outcomes.json").write_text(json.dumps(outcomes, indent=1))
    for name, error in outcomes.items():  # a gr.Error for missing weights or a bad default input is fine,
        assert not (error and "could not load" in error), f"{name}: a shipped weights folder is broken: {error}"


def corrupt_copy(dest: Path) -> list[str]:
    """A copy of weights/ where every model has a truncated (or garbage) model.safetensors."""
    shutil.copytree(weights.WEIGHTS_DIR, dest, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    for name in weights.MODELS:
        folder = dest / name
        folder.mkdir(exist_ok=True)
        st = folder / "model.safetensors"
        if st.is_file():
            st.write_bytes(st.read_bytes()[: st.stat().st_size // 3])
        else:  # not trained yet here: make it present but unreadable
            (folder / "config.json").write_text("{}")
            st.write_bytes(b"this is not a safetensors file")
    return list(weights.MODELS)


def test_corrupt_weights_give_a_clear_error_while_other_tabs_work(tmp_path):
    names = corrupt_copy(tmp_path / "weights")
    with serve_app("app-corrupt", env={"ZOO_WEIGHTS_DIR": str(tmp_path / "weights")}) as url:
        client = client_for(url)
        rows = check_about(client)
        assert [row[2] for row in rows] == ["ready"] * len(names)  # the files are there, only unreadable
        outcomes = smoke_call_all(client, ARTIFACTS / "app-corrupt.log")
        (ARTIFACTS / "e2e_corrupt_outcomes.json").write_text(json.dumps(outcomes, indent=1))
        for name, error in outcomes.items():
            if error and "model.safetensors" in error:
                assert "could not load" in error and "python -m training." in error, error
                assert str(tmp_path / "weights") in error  # it names the file
        if len(outcomes) > 1:  # some model tab is listed: at least one of its endpoints noticed the damage
            assert any(e and "could not load" in e for e in outcomes.values()), outcomes
        check_about(client)  # still answering after the failures


def test_diffusion_classes_follow_the_dataset_over_the_api(app_url):
    """The class dropdown's choices change with the dataset in the browser; an API caller names both at once."""
    if not weights.available("ddpm-cifar10"):
        pytest.skip("ddpm-cifar10 not trained yet")
    client = client_for(app_url)
    out = client.predict("CIFAR-10", "dog", "DDIM", 2, 0, 3, 0, 1, api_name="/diffusion_generate")
    assert out[1].startswith("Done: 1 dog image(s), DDIM 2 steps")
    with pytest.raises(AppError, match="Unknown class 'dog' for Fashion-MNIST"):
        client.predict("Fashion-MNIST", "dog", "DDIM", 2, 0, 3, 0, 1, api_name="/diffusion_generate")


def test_detection_settings_before_any_photo_are_no_error(app_url):
    """Moving a threshold or picking classes before a photo is there clears the outputs instead of failing."""
    client = client_for(app_url)
    for api_name in ("/detect_score", "/detect_nms", "/detect_classes"):
        annotated, table, summary = client.predict(None, 0.5, 0.5, ["dog"], api_name=api_name)
        assert annotated is None and summary == "" and not table["data"]
    with pytest.raises(ValidationError, match="Please upload a photo first"):  # the Detect button asks for one
        client.predict(None, 0.5, 0.5, [], api_name="/detect")
