"""Shapes and references shared by the attention kernel tests (not a test module)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def find_nvcc() -> str | None:
    """The CUDA compiler CMake would use: $CUDACXX, nvcc on PATH, or the default toolkit."""
    default = Path("/usr/local/cuda/bin/nvcc")
    return (
        os.environ.get("CUDACXX")
        or shutil.which("nvcc")
        or (str(default) if default.exists() else None)
    )


VENDORED_TRT = REPO.parent / "shared" / "vendor" / "tensorrt-10.3.0"
"""TensorRT 10.3's public headers beside the checkout (../shared/vendor/README.md)."""


def build_kernels(
    build: Path, archs: str | None = None, env_extra: dict[str, str] | None = None
) -> str:
    """Run tools/build_kernels.sh into ``build`` (default architectures unless ``archs``, and
    ``env_extra`` added to the environment); assert it succeeded and return its output."""
    env = {**os.environ, **(env_extra or {}), "EMOSDK_BUILD_DIR": str(build)}
    env.pop("EMOSDK_CUDA_ARCHS", None)
    if archs is not None:
        env["EMOSDK_CUDA_ARCHS"] = archs
    r = subprocess.run(
        ["bash", str(REPO / "tools" / "build_kernels.sh")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return r.stdout + r.stderr


# (B, H, Tq, Tk, D). The fusion model (d_model 64, 4 heads -> D 16): audio steps 24/74/149 for
# 1/3/6 s windows (+1 always-present token), video frames 5/15/30 (+1); odd lengths on purpose.
FUSION_CASES = [
    (1, 4, 25, 6, 16),  # audio queries over video keys, 1 s
    (2, 4, 6, 25, 16),  # video queries over audio keys, 1 s
    (3, 4, 75, 16, 16),  # 3 s cross
    (2, 4, 16, 75, 16),
    (1, 4, 150, 150, 16),  # 6 s audio self-attention (more than two key tiles)
    (2, 4, 31, 31, 16),  # 6 s video self-attention
]
ODD_CASES = [
    (1, 1, 1, 1, 16),
    (2, 3, 7, 65, 32),  # 65 keys: one past a 64-key tile
    (1, 2, 33, 129, 64),
    (3, 1, 9, 17, 64),
]
ALL_CASES = FUSION_CASES + ODD_CASES


def random_inputs(
    rng: np.random.Generator, B: int, H: int, Tq: int, Tk: int, D: int, p_missing: float = 0.3
) -> tuple[np.ndarray, ...]:
    """q, k, v ~ N(0, 1) float64 and a float32 mask with about p_missing keys missing.

    Key 0 is always present (the model's learned token), except in batch row 0 when Tk > 1 and
    B > 1, where the mask is random everywhere (it may be all zeros: the kernel defines that).
    """
    q = rng.standard_normal((B, H, Tq, D))
    k = rng.standard_normal((B, H, Tk, D))
    v = rng.standard_normal((B, H, Tk, D))
    mask = (rng.random((B, Tk)) >= p_missing).astype(np.float32)
    mask[:, 0] = 1.0
    if B > 1 and Tk > 1:
        mask[0, :] = (rng.random(Tk) >= 0.5).astype(np.float32)
    return q, k, v, mask


def naive_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, scale: float | None = None
) -> np.ndarray:
    """Textbook masked softmax attention in float64, one (batch, head, query) row at a time."""
    B, H, Tq, D = q.shape
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    out = np.zeros((B, H, Tq, D))
    for b in range(B):
        keep = np.ones(k.shape[2], bool) if mask is None else mask[b] != 0
        if not keep.any():
            continue  # all keys missing: defined as a zero row
        for h in range(H):
            s = q[b, h] @ k[b, h][keep].T * scale
            w = np.exp(s - s.max(axis=-1, keepdims=True))
            out[b, h] = (w / w.sum(axis=-1, keepdims=True)) @ v[b, h][keep]
    return out
