"""One module per tab. A tab is added by writing ``demos/<name>.py`` with ``TITLE`` and ``build()``
(and, if it needs any, ``CSS`` for its own elem_ids) and listing it here; ``app.py`` never changes."""

TABS: list[str] = [
    "about",
    "textgen",
    "recommend",
    "classify",
    "detect",
    "generative",
    "diffusion",
    "caption",
]
