"""What every ``python -m training.<task>`` shares: numbers out of range are refused before any work, an
uncaught error is one line on stderr, and weights that do not match their config never load."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.mark.parametrize("args,message", [
    (("training.gpt", "--steps", "0", "--out"), "--steps must be above 0, got 0"),  # wrote untrained weights
    (("training.classify", "--epochs", "-1", "--weights-out"), "--epochs must be above 0"),
    (("training.recommend", "--model", "bpr", "--batch-size", "0", "--out"), "--batch-size must be above 0"),
    (("training.gpt", "--lr", "nan", "--out"), "--lr must be a finite number"),
    (("training.classify", "--widths", "0", "0", "0", "--weights-out"), "--widths must be above 0"),
    (("training.vae", "--iw-samples", "-1", "--weights-out"), "--iw-samples must be 0 or more"),
    (("training.gpt", "--threads", "0", "--out"), "--threads must be above 0")])
def test_numbers_out_of_range_are_refused_before_any_work(args, message, tmp_path):
    result = run(*args, str(tmp_path / "w"))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "w").exists()


def test_weights_that_do_not_match_their_config_are_an_error(tmp_path):
    """Loading was not strict: a GPT config with one more layer than its weights evaluated with a random
    layer (exit 0), a diffusion evaluation of the GPT's folder ran a random U-Net."""
    folder = tmp_path / "gpt"
    shutil.copytree(ROOT / "weights" / "gpt-shakespeare", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "n_layer": config["n_layer"] + 1}))
    result = run("training.gpt", "evaluate", "--weights", str(folder))
    assert result.returncode == 2 and "could not load" in result.stderr and "Missing key" in result.stderr
    result = run("training.diffusion", "evaluate", "--weights", str(ROOT / "weights" / "gpt-shakespeare"))
    assert result.returncode == 2 and "as a UNet" in result.stderr and "Traceback" not in result.stderr


def test_uncaught_errors_are_one_line(tmp_path):
    """Errors no check foresaw (here a folder given as the text file to score) print one line; the traceback
    is there on request."""
    args = ("training.gpt", "evaluate", "--weights", str(ROOT / "weights" / "gpt-shakespeare"), "--data",
            str(tmp_path))
    result = run(*args)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2 and "error:" in result.stderr  # after hub's loading line
    import os
    result = run(*args, env={**os.environ, "ZOO_TRACEBACK": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_diffusion_write_card_checks_its_record_before_evaluating():
    """--write-card needs the training run's train_info.json; that was checked only after the whole evaluation
    (1,000 DDIM and 1,000 DDPM samples by default)."""
    if (ROOT / "checkpoints" / "diffusion-fashion" / "train_info.json").exists():
        pytest.skip("this checkout has the training record")
    result = run("training.diffusion", "evaluate", "--weights", str(ROOT / "weights" / "ddpm-fashion"), "--write-card")
    assert result.returncode == 2 and "train_info.json not found" in result.stderr and "Traceback" not in result.stderr


def test_a_mistyped_local_frame_folder_is_not_looked_up_on_the_hub(tmp_path):
    """weights/yolo-vco (a typo) was taken for a Hub repo id: 29 s of retries without a network."""
    for frame in ("weights/yolo-vco", str(tmp_path / "nowhere")):
        result = run("training.classify", "evaluate", "--weights", str(ROOT / "weights" / "compact-cifar10"),
                     "--frame", frame, "--data", str(tmp_path))
        assert result.returncode == 2 and f"--frame {frame} not found" in result.stderr


def test_output_folders_that_cannot_be_written_are_refused_before_training(tmp_path):
    """A file or an impossible path as --out / --weights-out was found only when the weights were written,
    after the whole training run; a folder made for the check is removed again."""
    afile = tmp_path / "afile"
    afile.write_text("")
    result = run("training.gpt", "--out", str(afile), "--steps", "1")
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr
    result = run("training.classify", "--weights-out", str(afile / "sub"), "--epochs", "1")
    assert result.returncode == 2 and "cannot be created" in result.stderr
    from training.common import check_output_folder
    check_output_folder("--out", tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()


def test_push_refuses_a_folder_whose_config_is_not_json(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    shutil.copy(ROOT / "weights" / "gpt-shakespeare" / "model.safetensors", folder)
    (folder / "config.json").write_text("{oops")
    result = run("training.gpt", "push", "--weights", str(folder), "--repo-id", "me/x")
    assert result.returncode == 2 and "is not a valid config" in result.stderr and "nothing was pushed" in result.stderr
