"""The app shell in-process: every module in ``demos.TABS`` becomes a tab, and a tab that fails to build
is replaced by an error tab without taking the others down."""
from __future__ import annotations

import importlib

import pytest

import app
import demos


def tabs_of(blocks) -> dict[str, str]:
    return {c.id: c.label for c in blocks.blocks.values() if type(c).__name__ == "Tab"}


def markdown_of(blocks) -> str:
    return "\n".join(str(c.value) for c in blocks.blocks.values() if type(c).__name__ == "Markdown")


def test_every_listed_tab_is_built():
    assert demos.TABS[0] == "about" and len(set(demos.TABS)) == len(demos.TABS)
    blocks = app.build_app()
    tabs = tabs_of(blocks)  # (tabs may nest their own gr.Tab: only the top-level ids are checked)
    for name in demos.TABS:
        assert tabs.get(name) == importlib.import_module(f"demos.{name}").TITLE
    assert not [tab_id for tab_id in tabs if str(tab_id).endswith("-error")]
    assert "This tab failed to load" not in markdown_of(blocks)
    api_names = [fn.api_name for fn in blocks.fns.values()]
    assert "about_models" in api_names and len(api_names) == len(set(api_names))
    assert blocks.delete_cache == app.DELETE_CACHE  # output files do not pile up on a long-running server
    # share works only on Hugging Face Spaces: elsewhere the button would only say "Must be on Spaces to share"
    images = [c for c in blocks.blocks.values() if type(c).__name__ in ("Image", "ImageInput", "Gallery")]
    assert len(images) > 20 and not [c.label for c in images if "share" in c.buttons]
    assert all("download" in c.buttons and "fullscreen" in c.buttons for c in images)


def test_a_broken_tab_is_isolated(monkeypatch):
    monkeypatch.setattr(demos, "TABS", [*demos.TABS, "no_such_tab"])
    blocks = app.build_app()
    tabs = tabs_of(blocks)
    assert tabs["no_such_tab-error"] == "no_such_tab"
    assert all(name in tabs for name in demos.TABS if name != "no_such_tab")
    assert "This tab failed to load:** `ModuleNotFoundError" in markdown_of(blocks)


def test_a_tab_failing_half_way_leaves_nothing_behind(monkeypatch):
    import gradio as gr
    import types

    def build():  # lays out a button and its event, then fails
        gr.Button("Go").click(lambda: None, api_name="half_built_go")
        gr.Markdown("half-built content")
        raise RuntimeError("boom")

    half = types.ModuleType("demos.half_built")
    half.TITLE, half.build = "Half built", build
    monkeypatch.setitem(__import__("sys").modules, "demos.half_built", half)
    monkeypatch.setattr(demos, "TABS", [*demos.TABS, "half_built"])
    blocks = app.build_app()
    tabs = tabs_of(blocks)
    assert tabs["half_built-error"] == "Half built" and "half_built" not in tabs
    assert "half-built content" not in markdown_of(blocks)
    assert "This tab failed to load:** `RuntimeError: boom`" in markdown_of(blocks)
    assert "half_built_go" not in [fn.api_name for fn in blocks.fns.values()]


def test_about_table_lists_every_registered_model(registry):
    from demos.about import model_table
    from toys import TinyConfig, TinyNet
    rows = model_table()
    assert rows == [["tiny", "A tiny test model", "not trained yet: run `python -m training.toy --tiny`", ""]]
    folder = registry.WEIGHTS_DIR / "tiny"
    registry.save(TinyNet(TinyConfig()), folder)
    registry.write_card(folder, "tiny", description="d", metrics={"accuracy": 0.5}, dataset="toy",
                        dataset_name="Toy", task_type="regression", command="python -m training.toy --tiny")
    assert model_table() == [["tiny", "A tiny test model", "ready", "accuracy = 0.5"]]


@pytest.mark.parametrize("argv,host,port", [([], "127.0.0.1", 7860), (["--host", "0.0.0.0", "--port", "9000"],
                                                                          "0.0.0.0", 9000)])
def test_cli_host_and_port(monkeypatch, argv, host, port):
    launched = {}
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setattr(app, "build_app", lambda: FakeBlocks(launched))
    app.main(argv)
    assert (launched["server_name"], launched["server_port"]) == (host, port)
    assert launched["queue"]["default_concurrency_limit"] == app.DEFAULT_CONCURRENCY
    assert "#surprisal" in launched["css"]  # the tabs' own CSS (text generation's) reaches gradio


def test_cli_env_and_spaces_defaults(monkeypatch):
    launched = {}
    monkeypatch.setattr(app, "build_app", lambda: FakeBlocks(launched))
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.setenv("SPACE_ID", "someone/model-zoo")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    app.main([])
    assert (launched["server_name"], launched["server_port"]) == ("0.0.0.0", 7999)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "127.0.0.2")
    app.main([])
    assert launched["server_name"] == "127.0.0.2"


class FakeBlocks:
    def __init__(self, record: dict) -> None:
        self.record = record

    def queue(self, **kw):
        self.record["queue"] = kw
        return self

    def launch(self, **kw):
        self.record.update(kw)


@pytest.mark.parametrize("component,payload", [("number", float("nan")), ("number", float("inf")),
                                               ("number", "ten"), ("slider", None), ("slider", "x")])
def test_unusable_numbers_from_api_callers_are_clear_errors(component, payload):
    """Gradio's own preprocess raises TypeError/ValueError/OverflowError on these (an internal "Could not
    preprocess" message and a traceback in the log); the tabs' inputs answer with a gr.Error naming the field."""
    import gradio as gr

    from demos.common import NumberInput, SliderInput
    field = NumberInput(0, precision=0, label="Seed") if component == "number" else SliderInput(0, 3, label="Top-k")
    with pytest.raises(gr.Error, match=f"{field.label}: expected a finite number"):
        field.preprocess(payload)
    assert field.preprocess(2) == 2 and field.get_block_name() == component  # rendered as the plain component



@pytest.mark.parametrize("component,payload,message", [("number", 944, "greater than maximum value 943"),
                                                       ("slider", 0, "less than minimum value 1")])
def test_out_of_range_numbers_keep_gradios_message(component, payload, message):
    """Gradio's range check raises gr.Error, itself a ValueError: it used to be caught and reworded as
    'expected a finite number, got 944'."""
    import gradio as gr

    from demos.common import NumberInput, SliderInput
    field = (NumberInput(1, minimum=1, maximum=943, precision=0, label="User id") if component == "number"
             else SliderInput(1, 1000, step=1, label="Steps"))
    with pytest.raises(gr.Error, match=f"{field.label}: Value {payload} is {message}"):
        field.preprocess(payload)


def test_release_events_send_sliders_as_their_box_shows():
    """Gradio's slider sends a typed value on leaving its number box and clamps the box only afterwards:
    each release event clamps its sliders in the browser first (its ``js``), as do the photo events of those
    tabs (a photo dropped while a typed value is still in its box)."""
    from demos.common import clamp_sliders
    blocks = app.build_app()
    releases = {fn.api_name: fn for fn in blocks.fns.values() if any(event == "release" for _, event in fn.targets)}
    assert {"detect_score", "detect_nms", "caption_beam"} <= set(releases)
    for name, fn in releases.items():
        assert fn.js == clamp_sliders(fn.inputs), name
        # clicking into the box releases the old value first: the typed one must not be dropped behind it
        assert fn.trigger_mode == "always_last", name
    fns = {fn.api_name: fn for fn in blocks.fns.values()}
    assert fns["detect_image"].js == clamp_sliders(fns["detect_image"].inputs)
    assert fns["caption_upload"].js == clamp_sliders(fns["caption_upload"].inputs)
    # events that read no photo or slider through its component: the clear-on-remove handlers (only None
    # matters, and an unreadable upload is said once, by the upload event) and the scrubber (any step typed)
    assert not any(fns[name].preprocess for name in ("classify_clear", "caption_clear", "diffusion_scrub"))
    assert fns["diffusion_scrub"].trigger_mode == "always_last"


def test_clamp_sliders_code_runs_in_javascript():
    """The code the browser runs (node here): sliders clamped to their ranges (an emptied box, sent as null,
    becomes the minimum, as the box shows it), other inputs passed through, anything after the inputs dropped."""
    import json
    import shutil
    import subprocess

    import gradio as gr

    from demos.common import SliderInput, clamp_sliders
    node = shutil.which("node") or pytest.skip("node not found (apt-get install -y nodejs)")
    code = clamp_sliders([gr.Image(), SliderInput(0.05, 0.95), SliderInput(1, 8, step=1), gr.Dropdown()])
    calls = [[{"path": "a.jpg"}, 2, 20, ["cat"], "output"], [None, 0, -3, [], "output"], [None, 0.5, 3, [], None],
             [None, None, 8, [], None]]
    script = f"const f = {code};\nconsole.log(JSON.stringify({json.dumps(calls)}.map(args => f(...args))));"
    result = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(result.stdout) == [[{"path": "a.jpg"}, 0.95, 8, ["cat"]], [None, 0.05, 1, []],
                                         [None, 0.5, 3, []], [None, 0.05, 8, []]]


def test_fractions_in_whole_number_fields_are_refused():
    """An API caller's user id 1.5 used to become user 2 (Gradio rounds to the precision) and k 1.5 became 1;
    fields of fractional steps keep their fractions."""
    import gradio as gr

    from demos.common import NumberInput, SliderInput
    for field, message in ((NumberInput(0, precision=0, label="Seed"), "Seed: enter a whole number."),
                           (NumberInput(0.5, label="Rate"), "Rate: enter a number.")):
        with pytest.raises(gr.Error) as empty:  # an emptied box
            field.preprocess(None)
        assert empty.value.message == message
    with pytest.raises(gr.Error, match="User id: expected a whole number, got 1.5"):
        NumberInput(1, minimum=1, maximum=943, precision=0, label="User id").preprocess(1.5)
    with pytest.raises(gr.Error, match="Top-k: expected a whole number, got 2.7"):
        SliderInput(1, 50, value=10, step=1, label="Top-k").preprocess(2.7)
    assert SliderInput(1, 50, value=10, step=1, label="Top-k").preprocess(3.0) == 3
    assert SliderInput(0, 1, value=0.3, step=0.05, label="Score").preprocess(0.33) == 0.33
    assert NumberInput(0.5, label="Rate").preprocess(0.25) == 0.25


def test_custom_components_send_the_frontend_every_setting_of_their_base():
    # Gradio builds a component's config from its __init__ signature: an override taking **kwargs dropped
    # webcam_options, and the camera of every photo input stopped opening (a browser-only failure)
    import gradio as gr

    from demos.common import ImageInput, NumberInput, SketchpadInput, SliderInput
    for custom, base in ((ImageInput, gr.Image), (NumberInput, gr.Number), (SliderInput, gr.Slider),
                         (SketchpadInput, gr.Sketchpad)):
        assert set(base().get_config()) <= set(custom().get_config()), custom.__name__


def test_photo_buttons_validate_the_photo_first():
    # one result per input (Gradio fails the whole event otherwise); only a missing photo is refused
    from demos.common import photo_required
    missing = photo_required(None, 0.3, 0.5, [])
    assert len(missing) == 4 and not missing[0]["is_valid"] and "upload a photo" in missing[0]["message"]
    assert all(v["is_valid"] for v in missing[1:] + photo_required("cat.png", 0.3, 0.5, []))
    blocks = app.build_app()
    validated = {fn.api_name for fn in blocks.fns.values() if fn.validator is photo_required}
    assert validated == {"classify", "caption", "detect"}

