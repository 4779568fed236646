"""The weights registry: save/load roundtrip, fp16 storage, clear errors, model cards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gradio as gr
import pytest
import torch
from safetensors.torch import load_file, save_file

from toys import TinyConfig, TinyNet


def tiny(seed: int = 0, **cfg) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(TinyConfig(**cfg))


def test_save_load_roundtrip_in_fp16(registry):
    model = tiny(n_hidden=16)
    registry.save(model, registry.WEIGHTS_DIR / "tiny")
    folder = registry.WEIGHTS_DIR / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((folder / "config.json").read_text())["n_hidden"] == 16
    stored = load_file(folder / "model.safetensors")
    assert {v.dtype for v in stored.values()} == {torch.float16}
    assert not [p for p in registry.WEIGHTS_DIR.iterdir() if p.name.startswith(".")]  # no temp folder left

    big = tiny(n_hidden=16)
    with torch.no_grad():
        big.net[0].bias[0] = 1e5  # over fp16's 65504: that tensor stays fp32
    registry.save(big, registry.WEIGHTS_DIR / "big")
    assert load_file(registry.WEIGHTS_DIR / "big" / "model.safetensors")["net.0.bias"].dtype == torch.float32
    assert TinyNet.from_pretrained(str(registry.WEIGHTS_DIR / "big")).net[0].bias[0].item() == 1e5

    assert registry.available("tiny")
    loaded = registry.load("tiny")
    assert isinstance(loaded, TinyNet) and not loaded.training and loaded.config.n_hidden == 16
    for k, v in model.state_dict().items():
        assert loaded.state_dict()[k].dtype == torch.float32
        torch.testing.assert_close(loaded.state_dict()[k], v.half().float())
    x = torch.randn(5, 4)
    torch.testing.assert_close(loaded(x), model(x), atol=2e-3, rtol=2e-3)
    assert registry.load("tiny") is loaded  # cached per process

    registry.save(model, registry.WEIGHTS_DIR / "full", half=False)
    assert {v.dtype for v in load_file(registry.WEIGHTS_DIR / "full" / "model.safetensors").values()} \
        == {torch.float32}


def test_missing_folder_names_the_file_and_the_train_command(registry):
    assert not registry.available("tiny")
    with pytest.raises(registry.WeightsError) as e:
        registry.load("tiny")
    msg = str(e.value)
    assert str(registry.WEIGHTS_DIR / "tiny" / "config.json") in msg
    assert "python -m training.toy --tiny" in msg
    with pytest.raises(registry.WeightsError, match="unknown model 'nope'"):
        registry.load("nope")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty_config", "wrong_shape", "missing_key"])
def test_corrupt_folder_gives_a_weights_error(registry, damage):
    folder = registry.WEIGHTS_DIR / "tiny"
    registry.save(tiny(), folder)
    st = folder / "model.safetensors"
    if damage == "truncate":
        st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    elif damage == "garbage":
        st.write_bytes(b"\x00not a safetensors file" * 10)
    elif damage == "empty_config":
        (folder / "config.json").write_text("{")
    elif damage == "wrong_shape":
        (folder / "config.json").write_text(json.dumps({"n_in": 4, "n_hidden": 3, "n_out": 1}))
    elif damage == "missing_key":  # loads without a shape error, but one tensor would stay random
        tensors = load_file(st)
        tensors.pop(sorted(tensors)[0])
        save_file(tensors, st)
    with pytest.raises(registry.WeightsError) as e:
        registry.load("tiny")
    assert "model.safetensors" in str(e.value) and "python -m training.toy --tiny" in str(e.value)


def test_ui_helpers_turn_weights_errors_into_gradio_errors(registry):
    from demos.common import load_model, weights_status
    with pytest.raises(gr.Error) as e:
        load_model("tiny")
    assert "python -m training.toy --tiny" in str(e.value)
    assert "python -m training.toy --tiny" in weights_status("tiny")
    registry.save(tiny(), registry.WEIGHTS_DIR / "tiny")
    assert weights_status("tiny") == ""
    assert isinstance(load_model("tiny"), TinyNet)


def test_model_card_metrics_roundtrip(registry):
    folder = registry.WEIGHTS_DIR / "tiny"
    registry.save(tiny(), folder)
    assert registry.card_metrics("tiny") == {}
    registry.write_card(folder, "tiny", description="A tiny model.", metrics={"accuracy": 0.875, "nll": 1.25},
                        dataset="tiny-data", dataset_name="Tiny data", task_type="regression",
                        command="python -m training.toy --tiny", tags=["test"])
    assert registry.card_metrics("tiny") == {"accuracy": 0.875, "nll": 1.25}
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n") and "license: mit" in text and "tiny-data" in text and "model-index" in text
    assert "python -m training.toy --tiny" in text


def test_registry_entries_are_well_formed():
    import weights
    assert weights.MODELS
    for name, spec in weights.MODELS.items():
        assert spec.name == name and ":" in spec.model_class
        assert spec.train_command.startswith(f"python -m training.{spec.task}")


def test_shipped_cards_name_their_own_folder():
    # Trainers name a card after the registry entry it is a candidate for, wherever --weights-out points
    # (twice a card once shipped under its training run's folder name).
    import yaml

    import weights
    cards = [weights.local_dir(name) / "README.md" for name in weights.MODELS]
    cards = [card for card in cards if card.exists()]
    assert cards
    for card in cards:
        front, body = card.read_text().split("---\n", 2)[1:]
        assert yaml.safe_load(front)["model-index"][0]["name"] == card.parent.name, card
        assert body.lstrip().startswith(f"# {card.parent.name}\n"), card


def test_weights_dir_env_override(tmp_path):
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", "import weights; print(weights.WEIGHTS_DIR)"],
                         env={**os.environ, "ZOO_WEIGHTS_DIR": str(tmp_path)},
                         capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == str(tmp_path)


def test_print_json_writes_strict_json(capsys):
    from training.common import print_json
    print_json({"a": float("nan"), "b": {"c": [1.5, float("inf")], "d": "x"}, "e": 2})
    assert capsys.readouterr().out == '{"a": null, "b": {"c": [1.5, null], "d": "x"}, "e": 2}\n'
