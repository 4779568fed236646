"""Run by test_hub.py in a subprocess, so that ``HF_ENDPOINT`` / ``HF_HUB_CACHE`` are set before
``huggingface_hub`` is imported. ``push FOLDER REPO_ID`` publishes through ``training.common.push_to_hub``;
``load NAME ORG`` loads the registered TinyNet ``NAME`` from the Hub through ``weights.load`` and prints its
output on a fixed input, its card metrics and the folder it came from as one JSON line (or its error and the
About tab's rows)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import torch  # noqa: E402

import weights  # noqa: E402
from toys import tiny_spec  # noqa: E402


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "push":
        from training.common import push_to_hub
        print(json.dumps({"url": push_to_hub(args[0], args[1])}))
    elif command == "load":
        name, org = args
        weights.MODELS[name] = tiny_spec(name)
        weights.set_hub_org(org)
        try:
            model = weights.load(name)
        except weights.WeightsError as e:
            from demos.about import model_table  # the About tab shows the error in that model's row
            print(json.dumps({"error": str(e), "about": model_table()}))
            return
        x = torch.linspace(-1, 1, 8).reshape(2, 4)
        for _ in range(3):  # a request resolving the model again asks the Hub nothing more
            weights.resolve(name)
        print(json.dumps({"output": model(x).flatten().tolist(), "metrics": weights.card_metrics(name),
                          "folder": str(weights.resolve(name)), "class": type(model).__name__}))


if __name__ == "__main__":
    main()
