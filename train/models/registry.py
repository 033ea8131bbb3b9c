"""All registered models by name (:data:`MODELS`) and :func:`build_model`.

Each paper's file declares its entries (``SPECS``: the factory, the papers' hyper-parameters and
a tiny smoke config, the source); this module only collects them.
"""

from __future__ import annotations

from typing import Any

from . import auxformer, hussain, mult, parthasarathy, unimodal, vavl
from .base import ModelSpec, PaperModel

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for module in (auxformer, vavl, mult, parthasarathy, unimodal, hussain)
    for spec in module.SPECS
}
"""All models under the contract, by name."""


def build_model(
    name: str, d_audio: int, d_video: int, n_classes: int, size: str = "paper", **overrides: Any
) -> PaperModel:
    """Build a registered model.

    Args:
        name: a key of :data:`MODELS`.
        d_audio, d_video: input feature widths (``hussain`` needs ``HUSSAIN_D_AUDIO``).
        n_classes: number of classes.
        size: ``"paper"`` (the papers' hyper-parameters) or ``"smoke"`` (tiny, 1 layer, for CI).
        **overrides: constructor arguments replacing the size's config (e.g. ``n_layers=2``,
            ``regression=True`` for ``vavl``, ``soft_labels=True``, ``causal=False``).
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    if size not in ("paper", "smoke"):
        raise ValueError(f"size must be 'paper' or 'smoke', not {size!r}")
    spec = MODELS[name]
    config = dict(spec.paper if size == "paper" else spec.smoke)
    config.update(overrides)
    model = spec.factory(d_audio=d_audio, d_video=d_video, n_classes=n_classes, **config)
    model.modalities = spec.modalities
    return model
