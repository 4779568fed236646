"""The Hub paths run the real ``huggingface_hub`` code against a fake Hub on 127.0.0.1: ``weights.load``
with a hub org downloads (snapshot_download, cached) and loads a model; ``training.common.push_to_hub``
creates the repo and uploads the folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import weights
from fake_hub import FakeHub
from toys import TinyConfig, TinyNet

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def client(hub: FakeHub, cache: Path, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k != weights.HUB_ORG_ENV}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(cache), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_XET="1", HF_TOKEN="hf_fake_test_token", NO_PROXY="127.0.0.1,localhost",
               GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.run([sys.executable, str(HERE / "hub_client.py"), *args], env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def tiny_folder(tmp_path) -> tuple[Path, TinyNet]:
    torch.manual_seed(0)
    model = TinyNet(TinyConfig(n_hidden=6))
    folder = tmp_path / "tiny"
    weights.save(model, folder)
    weights.write_card(folder, "tiny", description="tiny", metrics={"accuracy": 0.75}, dataset="toy",
                       dataset_name="Toy", task_type="regression", command="python -m training.toy --tiny")
    return folder, model


def expected_output(model: TinyNet) -> list:
    x = torch.linspace(-1, 1, 8).reshape(2, 4)
    half = TinyNet(model.config)
    half.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    return half(x).flatten().tolist()


def test_load_from_hub_downloads_once_and_loads(tmp_path, tiny_folder):
    folder, model = tiny_folder
    cache = tmp_path / "hf-cache"
    with FakeHub() as hub:
        sha = hub.add_folder("testorg/tiny", folder)
        out = client(hub, cache, "load", "tiny", "testorg")
        assert out["class"] == "TinyNet" and out["metrics"] == {"accuracy": 0.75}
        assert out["output"] == pytest.approx(expected_output(model), abs=1e-6)
        assert Path(out["folder"]) == cache / "models--testorg--tiny" / "snapshots" / sha
        # one call to the Hub API per process, though the model was resolved five times
        assert [r.startswith("GET /api/models/testorg/tiny/revision/main") for r in hub.requests].count(True) == 1
        downloads = [r for r in hub.requests if r.startswith("GET /testorg/tiny/resolve/")]
        assert sorted(r.rsplit("/", 1)[1] for r in downloads) == ["README.md", "config.json", "model.safetensors"]

        hub.requests.clear()  # a second process finds everything in the cache: no file is downloaded again
        assert client(hub, cache, "load", "tiny", "testorg")["output"] == out["output"]
        assert not [r for r in hub.requests if r.startswith("GET /testorg/tiny/resolve/")]

        missing = client(hub, cache, "load", "tiny", "nobody")
        assert "could not download nobody/tiny" in missing["error"]
        _, _, status, metrics = {row[0]: row for row in missing["about"]}["tiny"]
        assert status.startswith("unavailable: could not download nobody/tiny") and not metrics


def test_push_to_hub_then_load(tmp_path, tiny_folder):
    folder, model = tiny_folder
    (folder / "notes.txt").write_text("not part of a release")
    with FakeHub() as hub:
        url = client(hub, tmp_path / "push-cache", "push", str(folder), "testorg/tiny")["url"]
        assert url.startswith(f"{hub.url}/testorg/tiny/commit/")
        repo = hub.repos["testorg/tiny"]
        assert sorted(repo.files) == ["README.md", "config.json", "model.safetensors"]
        for name, data in repo.files.items():
            assert data == (folder / name).read_bytes()
        assert set(hub.auth_headers) == {"Bearer hf_fake_test_token"}
        assert hub.validated and all(card.startswith("---\n") and "model-index" in card for card in hub.validated)
        out = client(hub, tmp_path / "hf-cache", "load", "tiny", "testorg")
        assert out["output"] == pytest.approx(expected_output(model), abs=1e-6)


SPACE_CHECK = """
import json, app, weights
blocks = app.build_app()
text = "\\n".join(str(getattr(b, "value", "")) for b in blocks.blocks.values())
loaded = [type(weights.load(name)).__name__ for name in weights.MODELS]
print(json.dumps({"app": app.__file__, "weights": str(weights.WEIGHTS_DIR), "loaded": loaded,
                  "broken_tab": "This tab failed to load" in text,
                  "missing": "models of this tab are unavailable" in text}))
"""


def test_space_files_skip_hidden_folders_and_match_odd_names_exactly(tmp_path):
    from huggingface_hub.utils import filter_repo_objects

    from training.space import SPACE_PATHS, space_files, upload_patterns
    for entry in SPACE_PATHS:
        (tmp_path / entry).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / entry).mkdir() if "." not in entry else (tmp_path / entry).write_text("x")
    for f in ("weights/tiny/model.safetensors", "weights/.tiny.k2j4/model.safetensors", "demos/[ab]*?.py",
              "demos/a*.py", "demos/__pycache__/x.pyc"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    files = space_files(tmp_path)
    assert files == sorted(["README.md", "requirements.txt", "app.py", "weights/tiny/model.safetensors",
                            "demos/[ab]*?.py", "demos/a*.py"])
    chosen = ["demos/[ab]*?.py"]  # as a plain pattern it would match demos/a*.py and not itself
    assert list(filter_repo_objects(files, allow_patterns=upload_patterns(chosen))) == chosen


def test_publish_space_uploads_what_the_app_needs_and_the_upload_serves(tmp_path):
    from fake_hub import Repo
    from training.space import space_files
    root = HERE.parent
    files = space_files()
    assert {"README.md", "requirements.txt", "app.py", "demos/classify.py", "training/classify.py",
            "weights/compact-cifar10/model.safetensors"} <= set(files)
    assert not [f for f in files if f.startswith(("tests/", "bench/", "docs/", ".ci/", "checkpoints/"))
                or f.endswith((".pyc", ".pyi"))]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ZOO_")) and k != "PYTHONPATH"}
    env.update(HF_ENDPOINT="", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1", HF_TOKEN="hf_fake_test_token",
               HF_HUB_CACHE=str(tmp_path / "hf-cache"), NO_PROXY="127.0.0.1,localhost",
               GRADIO_ANALYTICS_ENABLED="False")
    with FakeHub() as hub:
        # a Space published before: what is gone from the app now goes from the Space, .gitattributes stays
        hub.repos["spaces/testorg/zoo"] = Repo(files={"old_tab.py": b"x = 1\n", ".gitattributes": b"* -text\n"})
        env["HF_ENDPOINT"] = hub.url
        proc = subprocess.run([sys.executable, "-m", "training.space", "--repo-id", "testorg/zoo"], cwd=root,
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.strip().startswith(f"{hub.url}/spaces/testorg/zoo/commit/")
        assert hub.created[-1]["type"] == "space" and hub.created[-1]["sdk"] == "gradio"
        assert "testorg/zoo" not in hub.repos  # a Space, not a model repo
        space = hub.repos["spaces/testorg/zoo"].files
        assert sorted(space) == sorted([*files, ".gitattributes"])
        assert all(space[f] == (root / f).read_bytes() for f in files)
        bad = subprocess.run([sys.executable, "-m", "training.space", "--repo-id", "zoo"], cwd=root, env=env,
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and bad.stderr.startswith("error: give the Space as --repo-id ORG/NAME")

    # The uploaded files alone serve the app: every tab builds and every registered model loads.
    folder = tmp_path / "space"
    for name, data in space.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", SPACE_CHECK], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["app"]).parent == folder and Path(out["weights"]).parent == folder
    assert len(out["loaded"]) == len(weights.MODELS) and not out["broken_tab"] and not out["missing"]


def test_push_errors_are_one_line_and_come_before_training(tmp_path, tiny_folder):
    folder, _ = tiny_folder
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="hf_fake_test_token", HF_HUB_DISABLE_TELEMETRY="1",
               GRADIO_ANALYTICS_ENABLED="False", NO_PROXY="127.0.0.1")  # port 9: nothing listens there

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "training.vae", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
    cases = [(("push", "--weights", str(folder), "--repo-id", "bad id/x/y"), "bad Hub repo id 'bad id/x/y'"),
             (("push", "--weights", str(tmp_path / "nowhere"), "--repo-id", "org/ok"), "is not a weights folder"),
             (("push", "--weights", str(folder), "--repo-id", "org/ok"), "could not push"),
             (("--push-to-hub", "bad id", "--steps", "1"), "bad Hub repo id")]  # refused before any training
    for args, message in cases:
        proc = run(*args)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- found a surviving mutation

def test_switching_to_the_hub_drops_models_loaded_from_local_folders(registry, tmp_path, monkeypatch):
    import huggingface_hub
    torch.manual_seed(0)
    registry.save(TinyNet(TinyConfig()), registry.WEIGHTS_DIR / "tiny")
    local = registry.load("tiny")
    torch.manual_seed(1)
    registry.save(TinyNet(TinyConfig()), tmp_path / "hub-snapshot")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(tmp_path / "hub-snapshot"))
    registry.set_hub_org("someorg")
    try:
        remote = registry.load("tiny")
        assert registry.resolve("tiny") == tmp_path / "hub-snapshot"
        assert remote is not local and not torch.equal(remote.net[0].weight, local.net[0].weight)
    finally:
        registry.set_hub_org(None)
