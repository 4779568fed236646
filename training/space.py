"""Publish this app as a Hugging Face Space: ``python -m training.space --repo-id ORG/NAME``.

A plain ``git push`` of this repository to a Space is refused: the Hub takes binary files such as the
safetensors weights only through its Xet/LFS storage, and this repository's history keeps them in plain
git. Uploading through the Hub's API stores every file the way the Hub wants, sends only what the app needs
(no tests, benchmarks, screenshots, checkpoints or data), and deletes what an earlier upload sent that is
gone now. The YAML block at the top of README.md is the Space's configuration.
"""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

from training.common import ROOT, fail

# What a Space needs to serve the app: demos.classify imports training.classify, so training/ goes too.
SPACE_PATHS = ("README.md", "requirements.txt", "app.py", "demos", "models", "training", "weights")
SKIP_DIRS = {"__pycache__"}
SKIP_SUFFIXES = {".pyc", ".pyi"}  # bytecode, and the stubs gradio writes beside custom components


def space_files(root: Path = ROOT) -> list[str]:
    """The repository-relative paths (posix) a Space of this app is made of, sorted."""
    files = []
    for entry in SPACE_PATHS:
        path = root / entry
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run this from a checkout of the model zoo")
        for f in [path] if path.is_file() else sorted(path.rglob("*")):
            rel = f.relative_to(root)
            hidden = any(part.startswith(".") for part in rel.parts)  # e.g. a killed weights.save's temp folder
            if f.is_file() and f.suffix not in SKIP_SUFFIXES and not SKIP_DIRS & set(rel.parts) and not hidden:
                files.append(rel.as_posix())
    return sorted(files)


def upload_patterns(files: list[str]) -> list[str]:
    """``files`` as the fnmatch patterns ``upload_folder`` filters with, each matching only its own path."""
    return [glob.escape(f) for f in files]


def push_space(repo_id: str, files: list[str], private: bool = False, root: Path = ROOT) -> str:
    """Create (or update) the Gradio Space ``repo_id`` with ``files`` (``space_files``); returns the commit URL."""
    from huggingface_hub import HfApi
    api = HfApi()
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(root), repo_id=repo_id, repo_type="space",
                             allow_patterns=upload_patterns(files), delete_patterns="*",
                             commit_message="Publish the model zoo app")
    return str(getattr(info, "commit_url", info))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.space", description=__doc__.splitlines()[0])
    parser.add_argument("--repo-id", help="the Space, ORG/NAME (created if it does not exist)")
    parser.add_argument("--private", action="store_true", help="create the Space as private")
    parser.add_argument("--dry-run", action="store_true", help="list the files and their size; upload nothing")
    args = parser.parse_args(argv)
    try:
        files = space_files()
    except FileNotFoundError as e:
        fail(str(e))
    if args.dry_run:
        size = sum((ROOT / f).stat().st_size for f in files)
        print("\n".join(files))
        print(f"{len(files)} files, {size / 2**20:.1f} MiB", file=sys.stderr)
        return
    if not args.repo_id or args.repo_id.count("/") != 1:
        fail("give the Space as --repo-id ORG/NAME (or --dry-run to see what would be uploaded)")
    try:
        print(push_space(args.repo_id, files, args.private))
    except Exception as e:  # no token, no network, no permission: one line, not a traceback
        fail(f"could not publish {args.repo_id}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
