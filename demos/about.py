"""About tab: every registered model, whether its weights are here, and the metrics its card states."""
from __future__ import annotations

import gradio as gr

import weights

TITLE = "About"


def model_table() -> list[list[str]]:
    """One row per registered model: name, what it is, status, metrics from its model card."""
    rows = []
    for name, spec in weights.MODELS.items():
        status, metrics = "ready", ""
        if not weights.available(name):
            status = f"not trained yet: run `{spec.train_command}`"
        else:
            try:
                metrics = ", ".join(f"{k} = {v:.4g}" if isinstance(v, (int, float)) else f"{k} = {v}"
                                    for k, v in weights.card_metrics(name).items()) or "(no metrics in card)"
            except weights.WeightsError as e:  # a Hub repo missing or unreachable: that row says so
                status = f"unavailable: {e}"
        rows.append([name, spec.title, status, metrics])
    return rows


def build() -> None:
    gr.Markdown(
        "A model zoo you can open in a browser: every tab runs a model this project implements in "
        "PyTorch and trains from scratch. Each model's card in `weights/<name>/README.md` states the "
        "metric measured on its test split and the exact command that reproduced it.")
    # max_height: every model's metrics readable at once; widths in px, not %: on a phone the table scrolls
    # sideways rather than breaking words into one letter a line
    table = gr.Dataframe(value=model_table(), headers=["model", "what", "status", "measured"],
                         interactive=False, wrap=True, column_widths=["160px", "240px", "70px", "700px"],
                         max_height=2000)
    refresh = gr.Button("Refresh", size="sm")
    refresh.click(model_table, outputs=table, api_name="about_models")
