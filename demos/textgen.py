"""Text generation tab: Shakespeare-like text streamed from a character GPT (or the LSTM baseline),
and the per-character surprisal of any text under the chosen model."""
from __future__ import annotations

import math
import time
from typing import Iterator

import gradio as gr
import torch

import weights
from demos.common import MAX_SEED, NumberInput, SliderInput, load_model, weights_status

TITLE = "Text generation"
MODELS = {"GPT": "gpt-shakespeare", "LSTM": "lstm-shakespeare"}
STREAM_INTERVAL = 0.05  # seconds between streamed updates of the generated text
LIMITS = {"temperature": (0.0, 3.0), "top_k": (0, 1000), "top_p": (0.01, 1.0), "max_new_tokens": (1, 2000)}
MAX_SCORE_CHARS = 20_000
# The surprisal reads as text: gradio's per-character tokens flow inline (not as flex items, so a newline
# breaks the line) without padding or gaps (font-size 0 hides the whitespace between their spans), in
# monospace so that spaces keep their width; each character's span takes its token's colour.
CSS = """
#surprisal .textfield { display: block; }
#surprisal .token-container, #surprisal .token { display: inline; margin: 0; padding: 0; font-size: 0; }
#surprisal .token .text { font-family: var(--font-mono); font-size: var(--text-lg); white-space: pre-wrap;
                          background-color: inherit; }
"""


def default_model() -> str:
    """GPT, unless only the LSTM's weights are present."""
    return next((label for label, name in MODELS.items() if weights.available(name)), "GPT")


EXAMPLES = [["ROMEO:\n", 0.8, 0, 0.95, 300, 1], ["First Citizen:\nBefore we proceed", 0.6, 20, 1.0, 300, 7],
            ["KING HENRY:\nNow", 1.0, 0, 0.9, 400, 42],
            ["JULIET:\n", 0.0, 0, 1.0, 200, 0]]  # temperature 0: greedy decoding soon repeats itself


def clamp_settings(temperature: float, top_k: float, top_p: float, max_new_tokens: float
                   ) -> tuple[float, int, float, int, list[str]]:
    """Clamp sampling settings into their allowed ranges; also return what was changed."""
    notes, values = [], {}
    for name, value in [("temperature", temperature), ("top_k", top_k), ("top_p", top_p),
                        ("max_new_tokens", max_new_tokens)]:
        low, high = LIMITS[name]
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise gr.Error(f"{name} must be a number, got {value!r}") from None
        if not math.isfinite(v):
            raise gr.Error(f"{name} must be a finite number, got {value!r}")
        clamped = min(max(v, low), high)
        if clamped != v:
            notes.append(f"{name} {v:g} was clamped to {clamped:g}")
        values[name] = clamped
    return (values["temperature"], int(values["top_k"]), values["top_p"], int(values["max_new_tokens"]), notes)


def _model(choice: str):
    if choice not in MODELS:
        raise gr.Error(f"Unknown model {choice!r}: choose one of {', '.join(MODELS)}.")
    return load_model(MODELS[choice])


def _encode(model, text: str) -> list[int]:
    missing = model.tokenizer.unknown(text)
    if missing:
        shown = " ".join(repr(c) for c in missing[:15]) + (" ..." if len(missing) > 15 else "")
        raise gr.Error(f"These characters are not in the model's vocabulary (it knows the "
                       f"{len(model.tokenizer.vocab)} characters of Tiny Shakespeare): {shown}")
    return model.tokenizer.encode(text)


def generate(prompt: str, temperature: float = 0.8, top_k: float = 0, top_p: float = 0.95,
             max_new_tokens: float = 300, seed: float = 0, model_choice: str = "GPT") -> Iterator[str]:
    """Stream the prompt followed by sampled characters: the text so far, at most every STREAM_INTERVAL
    seconds (a 20,000-character prompt resent for each of 2,000 new characters was 44 MB), and at the end."""
    prompt = prompt if isinstance(prompt, str) else ""
    if len(prompt) > MAX_SCORE_CHARS:
        raise gr.Error(f"The prompt is {len(prompt):,} characters; the limit is {MAX_SCORE_CHARS:,}.")
    temperature, top_k, top_p, max_new_tokens, notes = clamp_settings(temperature, top_k, top_p, max_new_tokens)
    try:
        seed_value = float(seed)
    except (TypeError, ValueError, OverflowError):
        seed_value = math.nan
    if not (math.isfinite(seed_value) and seed_value.is_integer() and 0 <= seed_value <= MAX_SEED):
        raise gr.Error(f"Seed must be a whole number from 0 to {MAX_SEED}, got {str(seed)[:40]}.")
    for note in notes:
        gr.Warning(note)
    model = _model(model_choice)
    context = prompt or "\n"  # an empty prompt starts from a newline
    ids = _encode(model, context)
    generator = torch.Generator().manual_seed(int(seed_value))
    text, shown, last = prompt, None, -math.inf  # the first character shows at once
    for token in model.generate(ids, max_new_tokens, temperature, top_k, top_p, generator):
        text += model.tokenizer.decode([token])
        if time.monotonic() - last >= STREAM_INTERVAL:  # each update resends the whole text: not every character
            yield text
            shown, last = text, time.monotonic()
    if text != shown:
        yield text


def surprisal(text: str, model_choice: str = "GPT") -> tuple[list[tuple[str, float]], str]:
    """Per-character surprisal (bits) as highlighted text, and the text's perplexity."""
    if not isinstance(text, str) or len(text) < 2:
        raise gr.Error("Enter at least two characters to score.")
    if len(text) > MAX_SCORE_CHARS:
        raise gr.Error(f"The text is {len(text):,} characters; the limit is {MAX_SCORE_CHARS:,}.")
    model = _model(model_choice)
    log_probs = model.log_probs(_encode(model, text))
    bits = (-log_probs / math.log(2)).tolist()
    # The first character has no context and is not scored; colour scale: 0 bits -> 0, >= 8 bits -> 1.
    highlighted = [(text[0], 0.0)] + [(c, min(b / 8.0, 1.0)) for c, b in zip(text[1:], bits)]
    nats = float(-log_probs.mean())
    worst = sorted(zip(bits, range(1, len(text))), reverse=True)[:3]
    worst_text = ", ".join(f"{text[i]!r} at {i} ({b:.1f} bits)" for b, i in worst)
    summary = (f"**Perplexity {math.exp(nats):.2f}** under the {model_choice} ({nats:.3f} nats, {nats / math.log(2):.2f} bits per "
               f"character over {len(bits):,} characters). Most surprising: {worst_text}.")
    return highlighted, summary


def build() -> None:
    status = weights_status(*MODELS.values())
    if status:
        gr.Markdown(status)
    gr.Markdown("Type a prompt and watch a character-level model trained on Tiny Shakespeare continue it. "
                "Sampling order: temperature, then top-k, then top-p (0 temperature = greedy).")
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="Prompt", value="ROMEO:\n", lines=4)
            model_choice = gr.Radio(list(MODELS), value=default_model(), label="Model")
            temperature = SliderInput(*LIMITS["temperature"], value=0.8, step=0.05, label="Temperature")
            top_k = SliderInput(0, 65, value=0, step=1, label="Top-k (0 = off)")
            top_p = SliderInput(*LIMITS["top_p"], value=0.95, step=0.01, label="Top-p")
            max_new = SliderInput(1, LIMITS["max_new_tokens"][1], value=300, step=1, label="New characters")
            seed = NumberInput(value=0, precision=0, label="Seed", minimum=0, maximum=MAX_SEED)
            with gr.Row():
                run = gr.Button("Generate", variant="primary")
                stop = gr.Button("Stop")
        with gr.Column(scale=2):
            output = gr.Textbox(label="Generated text", lines=18, autoscroll=True)
    examples = gr.Examples(EXAMPLES, [prompt, temperature, top_k, top_p, max_new, seed],
                           label="Examples (a click generates with its settings)")
    with gr.Accordion("How surprised is the model? (per-character surprisal)", open=True):
        score_text = gr.Textbox(label="Text to score", value="To be, or not to be, that is the question.",
                                lines=3)
        score = gr.Button("Score text")
        heat = gr.HighlightedText(label="Surprisal (darker = more bits)", combine_adjacent=False,
                                  show_legend=False, elem_id="surprisal")
        summary = gr.Markdown()
    inputs = [prompt, temperature, top_k, top_p, max_new, seed, model_choice]
    queue = {"concurrency_limit": 2, "concurrency_id": "textgen"}  # one group: the button and the examples
    event = run.click(generate, inputs, output, api_name="generate", **queue)
    example_event = examples.load_input_event.then(generate, inputs, output, api_name="generate_example", **queue)
    stop.click(None, cancels=[event, example_event])
    score.click(surprisal, [score_text, model_choice], [heat, summary], api_name="score",
                concurrency_limit=2, concurrency_id="textgen-score")  # scoring is fast: never queued behind generation
