"""Training augmentation for the face encoder (:mod:`train.face_recipe`).

Three layers, applied in this order to a batch of normalised faces (B, 1, S, S):

1. :func:`corrupt_faces`: the capture corruptions of issue 15 (darkening, sensor noise, motion
   blur, JPEG, low resolution, occlusion of the upper or lower face), one random kind per
   corrupted face, on the 8-bit-like grey image in [0, 1] as a camera would deliver it. The
   parameters are drawn from continuous ranges with the recipe's own generator, so they differ
   from the robustness benchmark's fixed seeds and severities (``sdk/emosdk/corruptions.py``
   had not landed when this was written; the kinds are the benchmark's).
2. :func:`geometric`: random rotation, scale, translation (one affine warp per face, border
   pixels replicated like the runtime's aligned crop) and horizontal flip.
3. :func:`mix_batch`: mixup or CutMix of the batch (soft targets mixed alike), then
   :func:`random_erase`.

Every function takes a ``numpy.random.Generator`` so a run is reproducible and resumable from
the step number alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor

CORRUPTIONS = ("dark", "noise", "motion_blur", "jpeg", "low_res", "occlusion")
"""Kinds of :func:`corrupt_one`, as in issue 15's video corruptions."""


def corrupt_one(g: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One corruption of a grey face ``g`` (H, W) float in [0, 1] -> same shape, in [0, 1].

    Ranges (drawn uniformly per face):

    * ``dark``: ``gain * g ** gamma``, gain 0.12-0.6, gamma 1.0-1.8 (a dim room and an
      auto-exposure that gave up), then 8-bit quantisation;
    * ``noise``: Gaussian read noise sigma 0.01-0.08 plus shot noise proportional to sqrt(g);
    * ``motion_blur``: a line kernel of 3-9 pixels at a random angle;
    * ``jpeg``: JPEG quality 8-45 (OpenCV's encoder);
    * ``low_res``: down to 10-24 pixels (area) and back up (bilinear), a face far from the camera;
    * ``occlusion``: 25-50 % of the face height covered from the top (hair, hat, hand) or the
      bottom (mask, hand, microphone) with a flat grey or noise.
    """
    import cv2

    h, w = g.shape
    if kind == "dark":
        out = rng.uniform(0.12, 0.6) * g ** rng.uniform(1.0, 1.8)
        return np.round(out * 255.0) / 255.0
    if kind == "noise":
        read = rng.uniform(0.01, 0.08)
        shot = rng.uniform(0.0, 0.05)
        sigma = np.sqrt(read**2 + shot**2 * g)
        return np.clip(g + rng.normal(size=g.shape) * sigma, 0.0, 1.0)
    if kind == "motion_blur":
        k = int(rng.choice([3, 5, 7, 9]))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0
        rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), float(rng.uniform(0, 180)), 1)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        kernel /= max(float(kernel.sum()), 1e-6)
        return cv2.filter2D(g.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REPLICATE)
    if kind == "jpeg":
        q = int(rng.integers(8, 46))
        u8 = np.clip(np.round(g * 255.0), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, q])
        return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    if kind == "low_res":
        s = int(rng.integers(10, 25))
        small = cv2.resize(g.astype(np.float32), (s, s), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if kind == "occlusion":
        out = g.copy()
        n = int(round(h * rng.uniform(0.25, 0.5)))
        rows = slice(0, n) if rng.random() < 0.5 else slice(h - n, h)
        if rng.random() < 0.5:
            out[rows] = rng.uniform(0.0, 1.0)
        else:
            out[rows] = rng.uniform(0.0, 1.0, size=out[rows].shape)
        return out
    raise ValueError(f"corruption kind must be one of {CORRUPTIONS}, got {kind!r}")


def corrupt_faces(
    x: np.ndarray,
    p: float,
    rng: np.random.Generator,
    mean: float = 0.5,
    std: float = 0.5,
    kinds: tuple[str, ...] = CORRUPTIONS,
) -> np.ndarray:
    """Corrupt each normalised face of ``x`` (B, 1, S, S) with probability ``p``.

    The face is un-normalised to [0, 1] with the bundle's ``mean``/``std``, corrupted by one
    random kind of :func:`corrupt_one`, and normalised back. Returns a new float32 array.
    """
    out = np.array(x, np.float32, copy=True)
    for i in np.flatnonzero(rng.random(len(x)) < p):
        g = np.clip(out[i, 0] * std + mean, 0.0, 1.0)
        kind = kinds[int(rng.integers(len(kinds)))]
        out[i, 0] = (corrupt_one(g, kind, rng) - mean) / std
    return out


def geometric(
    x: Tensor,
    rng: np.random.Generator,
    rotate_deg: float = 10.0,
    scale: tuple[float, float] = (0.9, 1.1),
    shift: float = 0.08,
    flip: bool = True,
) -> Tensor:
    """Random affine warp per face (rotation, isotropic scale, translation as a fraction of the
    side) and a horizontal flip with probability 0.5. x: (B, 1, S, S) -> same shape."""
    B = x.shape[0]
    a = np.deg2rad(rng.uniform(-rotate_deg, rotate_deg, B))
    s = 1.0 / rng.uniform(scale[0], scale[1], B)  # grid scale is the inverse of zoom
    sign = np.where(rng.random(B) < 0.5, -1.0, 1.0) if flip else np.ones(B)
    t = rng.uniform(-shift, shift, (B, 2)) * 2.0  # grid coordinates span [-1, 1]
    theta = np.zeros((B, 2, 3), np.float32)
    theta[:, 0, 0] = s * np.cos(a) * sign
    theta[:, 0, 1] = -s * np.sin(a)
    theta[:, 1, 0] = s * np.sin(a) * sign
    theta[:, 1, 1] = s * np.cos(a)
    theta[:, :, 2] = t
    grid = F.affine_grid(torch.from_numpy(theta), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def mix_batch(
    x: Tensor,
    targets: Tensor,
    rng: np.random.Generator,
    p: float = 0.5,
    cutmix_share: float = 0.5,
    mixup_alpha: float = 0.4,
    cutmix_alpha: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """With probability ``p``, mix the batch with a shuffled copy of itself: CutMix (a share
    ``cutmix_share`` of the time; a random box pasted, the targets weighted by its area) or
    mixup (a convex combination). ``targets`` (B, K) are probabilities, mixed the same way."""
    if rng.random() >= p:
        return x, targets
    perm = torch.from_numpy(rng.permutation(x.shape[0]))
    if rng.random() < cutmix_share:
        S = x.shape[-1]
        lam = rng.beta(cutmix_alpha, cutmix_alpha)
        cut = math.sqrt(1.0 - lam)
        h = w = int(round(S * cut))
        cy, cx = rng.integers(0, S, 2)
        y0, y1 = max(0, cy - h // 2), min(S, cy + h // 2)
        x0, x1 = max(0, cx - w // 2), min(S, cx + w // 2)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (S * S)
    else:
        lam = float(rng.beta(mixup_alpha, mixup_alpha))
        x = lam * x + (1.0 - lam) * x[perm]
    return x, lam * targets + (1.0 - lam) * targets[perm]


def random_erase(
    x: Tensor, rng: np.random.Generator, p: float = 0.25, area: tuple[float, float] = (0.02, 0.2)
) -> Tensor:
    """Random erasing (Zhong et al. 2020): with probability ``p`` per face, a rectangle of
    ``area`` of the face (aspect 0.3-3.3) is replaced with unit Gaussian noise."""
    B, _, S, _ = x.shape
    idx = np.flatnonzero(rng.random(B) < p)
    if len(idx) == 0:
        return x
    x = x.clone()
    for i in idx:
        a = rng.uniform(*area) * S * S
        r = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
        h = min(S, int(round(math.sqrt(a * r))))
        w = min(S, int(round(math.sqrt(a / r))))
        y0 = int(rng.integers(0, S - h + 1))
        x0 = int(rng.integers(0, S - w + 1))
        x[i, :, y0 : y0 + h, x0 : x0 + w] = torch.from_numpy(
            rng.normal(size=(1, h, w)).astype(np.float32)
        )
    return x


def soft_targets(y: np.ndarray, n_classes: int, smoothing: float) -> np.ndarray:
    """One-hot labels (B,) -> (B, K) with label smoothing ``smoothing`` spread over all classes."""
    t = np.full((len(y), n_classes), smoothing / n_classes, np.float32)
    t[np.arange(len(y)), y] += 1.0 - smoothing
    return t
