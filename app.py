"""The model zoo: ``python app.py`` serves one tab per module listed in ``demos.TABS``."""
from __future__ import annotations

import argparse
import importlib
import os
import traceback

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

import demos  # noqa: E402
import weights  # noqa: E402

MAX_FILE_SIZE = "10mb"
DEFAULT_CONCURRENCY = 2  # per event unless a tab sets its own concurrency_limit
# Gradio copies every output file into its cache: every hour, delete those older than an hour (examples and
# default values are kept), so that a long-running server's disk use stays bounded.
DELETE_CACHE = (3600, 3600)


def build_tab(name: str) -> tuple[str, gr.Blocks | None, str]:
    """(title, the tab's content built apart, "") or, when its module or build() fails, (title, None, error):
    a build() that fails half-way leaves nothing of itself in the app."""
    module = None
    try:
        module = importlib.import_module(f"demos.{name}")
        with gr.Blocks() as content:
            module.build()
        return module.TITLE, content, ""
    except Exception as e:  # one broken tab must not take the app down
        traceback.print_exc()
        return getattr(module, "TITLE", name), None, f"{type(e).__name__}: {e}"


def build_app() -> gr.Blocks:
    tabs = {name: build_tab(name) for name in demos.TABS}
    with gr.Blocks(title="Model zoo", delete_cache=DELETE_CACHE) as app:
        gr.Markdown("# Model zoo\nDeep-learning models implemented and trained from scratch by this "
                    "project, running on your CPU.")
        # "wrap": on a phone the tab names wrap onto rows instead of six of eight hiding behind a "..." menu
        with gr.Tabs(overflow_behavior="wrap"):
            for name, (title, content, error) in tabs.items():
                if content is not None:
                    with gr.Tab(title, id=name):
                        content.render()
                else:
                    with gr.Tab(title, id=f"{name}-error"):
                        gr.Markdown(f"**This tab failed to load:** `{error}`")
    return app


def tabs_css() -> str:
    """The ``CSS`` of every tab module that has one (gradio takes it at launch)."""
    css = []
    for name in demos.TABS:
        try:
            css.append(getattr(importlib.import_module(f"demos.{name}"), "CSS", ""))
        except Exception:  # build_app already showed this tab's error
            pass
    return "\n".join(c for c in css if c)


def main(argv: list[str] | None = None) -> None:
    on_spaces = bool(os.environ.get("SPACE_ID"))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME",
                                                         "0.0.0.0" if on_spaces else "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--hub-org", default=os.environ.get(weights.HUB_ORG_ENV),
                        help="load every model from the Hub repos ORG/<name> instead of weights/")
    args = parser.parse_args(argv)
    weights.set_hub_org(args.hub_org)
    app = build_app()
    app.queue(default_concurrency_limit=DEFAULT_CONCURRENCY, max_size=64)
    app.launch(server_name=args.host, server_port=args.port, max_file_size=MAX_FILE_SIZE,
               show_error=True, css=tabs_css())


if __name__ == "__main__":
    main()
