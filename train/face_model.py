"""The face encoder of :mod:`train.face_recipe` built from a run's config, and its predictions
over test-time views: shared by the recipe and :mod:`train.ckplus_cv` (a library module).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import FER_CLASSES
from .common import face_views
from .models.face import FaceResNet


def build_model(cfg: Any) -> FaceResNet:
    """The :class:`FaceResNet` of a config (a :class:`train.face_recipe.RecipeConfig` or a saved
    model config dict)."""
    c = cfg if isinstance(cfg, dict) else cfg.to_dict()
    return FaceResNet(
        d_video=c["d_video"],
        stem=c["stem"],
        widths=tuple(c["widths"]),
        blocks=tuple(c["blocks"]),
        n_classes=len(FER_CLASSES),
        dropout=c["dropout"],
    )


@torch.no_grad()
def predict(
    model: torch.nn.Module, x: np.ndarray, tta: str = "none", batch: int = 512
) -> np.ndarray:
    """Mean class probabilities (N, 7) over the test-time views of ``tta``."""
    model.eval()
    probs = np.zeros((len(x), len(FER_CLASSES)), np.float64)
    views = face_views(x, tta)
    for v in views:
        for s in range(0, len(v), batch):
            xb = torch.from_numpy(np.ascontiguousarray(v[s : s + batch]))
            probs[s : s + batch] += F.softmax(model(xb)[1], -1).double().numpy()
    return probs / len(views)
