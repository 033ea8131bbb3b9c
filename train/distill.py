"""Teacher probabilities for distilling the face encoder: the mean softmax of one or more
exported face encoders (ONNX graphs with a ``face_logits`` output, through onnxruntime), each
averaged over test-time views (:func:`train.common.face_views`), computed once and cached.

A library module: :mod:`train.face_recipe` trains with these targets and
:mod:`train.face_teacher` computes and caches them from the command line.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from emosdk.models.bundle import sha256_file
from emosdk.scores import softmax

from . import FER_CLASSES
from .common import face_views

logger = logging.getLogger("emosdk.train")


def graph_probs(
    graph: Path, x: np.ndarray, tta: str, threads: int = 1, batch: int = 256
) -> np.ndarray:
    """Mean softmax (N, 7) of one face-encoder graph over the test-time views of ``tta``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
    views = face_views(x, tta)
    probs = np.zeros((len(x), len(FER_CLASSES)), np.float64)
    for v in views:
        for s in range(0, len(v), batch):
            xb = np.ascontiguousarray(v[s : s + batch], np.float32)
            probs[s : s + batch] += softmax(sess.run(["face_logits"], {"face": xb})[0])
    return (probs / len(views)).astype(np.float32)


def teacher_probs(
    graphs: list[Path], x: np.ndarray, tta: str, cache: Path | None, threads: int = 1
) -> np.ndarray:
    """The ensemble teacher: mean over ``graphs`` of :func:`graph_probs`, (N, 7) float32.

    Cached in ``cache`` (an .npz) under a key of the graphs' SHA-256, ``tta`` and the number of
    faces, so a changed teacher or data set recomputes instead of reusing stale targets.
    """
    key = json.dumps(
        {"graphs": [sha256_file(g) for g in graphs], "tta": tta, "n": len(x)}, sort_keys=True
    )
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                return z["probs"]
        logger.info("teacher cache %s is for another teacher or data: recomputing", cache)
    t0 = time.time()
    probs = np.mean([graph_probs(g, x, tta, threads) for g in graphs], axis=0)
    logger.info("teacher: %d graphs x %d faces (%s) in %.0f s", len(graphs), len(x), tta,
                time.time() - t0)  # fmt: skip
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + ".tmp.npz")
        np.savez(tmp, key=np.array(key), probs=probs.astype(np.float32))
        tmp.replace(cache)
    return probs.astype(np.float32)
