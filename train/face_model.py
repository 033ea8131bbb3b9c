"""The face encoder of :mod:`train.face_recipe` built from a run's config, its predictions over
test-time views and its ONNX export: shared by the recipe, :mod:`train.ckplus_cv` and
:mod:`train.face_robust` (a library module).
"""

from __future__ import annotations

import copy
from pathlib import Path
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


def export_encoder(model: torch.nn.Module, path: Path, size: int = 48) -> Path:
    """Export ``face`` (B, 1, size, size) -> ``face_emb``, ``face_logits`` to ONNX (opset 18),
    checked against torch with onnxruntime (:func:`emosdk.export.onnx.export_onnx`)."""
    from emosdk.export.onnx import export_onnx

    from .bundle import FACE_IN, FACE_OUT

    m = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()
    g = torch.Generator().manual_seed(0)
    return export_onnx(
        m,
        (torch.randn(2, 1, size, size, generator=g),),
        path,
        FACE_IN,
        FACE_OUT,
        {"face": {0: "B"}},
        opset=18,
        check_inputs=[(torch.randn(1, 1, size, size, generator=g),)],
    )
