"""One look for every plot of the project: a colour and marker per variant, a line style per
runtime, the same in every figure, every run and every architecture, so that a reader who learned
that orange circles are tflite-int8 can trust it everywhere.

Each export variant declares its colour and marker next to its exporter; each runtime declares its line style next to its code
(``Runtime.linestyle``, so that adding a runtime stays one module); any other name (a user's runtime plugin, a new
variant) gets a colour and style chosen from its name's hash, so it too is stable across runs.
"""

from __future__ import annotations

import hashlib

# the reference's look; each export variant declares its own next to its exporter (``register(style=...)``)
REFERENCE_STYLE = ("#7f7f7f", "*")  # grey star: the Keras reference
_FALLBACK_COLOURS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")
_FALLBACK_MARKERS = ("h", "p", "d", "8", "H", "1", "2", "3")
_FALLBACK_LINES = ((0, (2, 2)), (0, (4, 2, 1, 2)), (0, (6, 2)), (0, (1, 3)))


def _pick(name: str, options: tuple):
    return options[int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(options)]


def variant_style(variant: str) -> dict:
    """Matplotlib keyword arguments (colour and marker) for a variant, a VARIANT@RUNTIME parity key
    included (the variant part decides)."""
    from toolkit import exporters

    name = variant.split("@")[0]
    exporters.load_all()
    declared = exporters.REGISTRY.get(name)
    if name == "keras":
        colour, marker = REFERENCE_STYLE
    elif declared and declared.style:
        colour, marker = declared.style
    else:
        colour, marker = _pick(name, _FALLBACK_COLOURS), _pick(name, _FALLBACK_MARKERS)
    return {"color": colour, "marker": marker}


def runtime_style(runtime: str) -> dict:
    from toolkit import runners

    declared = runners.load_all().get(runtime)
    linestyle = declared.linestyle if declared and declared.linestyle is not None else None
    return {"linestyle": linestyle if linestyle is not None else _pick(runtime, _FALLBACK_LINES)}
