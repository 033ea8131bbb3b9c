"""Rotated-rectangle sampling in numpy, as MediaPipe's ImageToTensor does it on the CPU.

MediaPipe maps the four corners of a (possibly rotated) rectangle of the frame onto the corners
of the model's input and samples with bilinear interpolation (OpenCV ``warpPerspective``,
``INTER_LINEAR``). Output pixel ``(u, v)`` of an ``out_w x out_h`` tensor therefore reads the
frame at ``centre + R(theta) @ ((u / out_w - 1/2) * width, (v / out_h - 1/2) * height)``. Doing
the same here keeps the runtime free of OpenCV and reproduces MediaPipe's inputs (checked against
mediapipe 0.10.21 by tools/convert_mediapipe.py).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from .. import _validate

FRAME_EXPECTED = "a frame (H, W) or (H, W, 1|3), uint8 or float in [0, 1]"


@dataclass(frozen=True)
class Rect:
    """A rotated rectangle in frame pixels.

    Attributes:
        cx, cy: centre.
        width, height: side lengths before rotation.
        rotation: radians, clockwise on screen (image y points down), as MediaPipe's
            ``NormalizedRect``.
    """

    cx: float
    cy: float
    width: float
    height: float
    rotation: float = 0.0

    def to_frame(self, points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Map points given in pixels of a ``size`` = (w, h) tensor sampled from this rect to frame
        pixels. ``points`` is (N, >=2); extra columns (z) are scaled by ``width / w``."""
        out = np.array(points, dtype=np.float32, copy=True)
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        x = (out[:, 0] / size[0] - 0.5) * self.width
        y = (out[:, 1] / size[1] - 0.5) * self.height
        out[:, 0] = self.cx + c * x - s * y
        out[:, 1] = self.cy + s * x + c * y
        if out.shape[1] > 2:
            out[:, 2:] *= self.width / size[0]
        return out


def check_frame(image: object, name: str = "image") -> np.ndarray:
    """Validate a frame as :func:`emosdk._validate.image` does (InputError on a bad one)."""
    return _validate.image(name, image, FRAME_EXPECTED)


def sample(
    image: np.ndarray,
    rect: Rect,
    out_size: tuple[int, int],
    *,
    color_order: str = "bgr",
    value_range: tuple[float, float] = (0.0, 1.0),
    border: str = "zero",
) -> np.ndarray:
    """Sample ``rect`` of a frame into an RGB float32 tensor (out_h, out_w, 3).

    Args:
        image: a validated frame, (H, W), (H, W, 1) or (H, W, 3), uint8 or float in [0, 1].
        rect: the region, in frame pixels.
        out_size: (out_w, out_h).
        color_order: channel order of a colour frame, ``"bgr"`` or ``"rgb"``.
        value_range: what black and white map to (MediaPipe: (-1, 1) for BlazeFace, (0, 1) for
            the landmark model).
        border: ``"zero"`` (outside the frame reads black) or ``"replicate"`` (the edge pixel).

    Returns:
        float32 array (out_h, out_w, 3), RGB, scaled to ``value_range``.
    """
    out_w, out_h = out_size
    h, w = image.shape[:2]
    img = image if image.ndim == 3 else image[..., None]
    c, s = math.cos(rect.rotation), math.sin(rect.rotation)
    ux = (np.arange(out_w, dtype=np.float32) / out_w - 0.5) * rect.width
    vy = (np.arange(out_h, dtype=np.float32) / out_h - 0.5) * rect.height
    if s == 0.0 and c == 1.0:  # axis-aligned (letterbox, tiles): a cached gather plan
        lo_row, hi_row, idx, wts = _plan(h, w, rect, out_w, out_h, border)
        out = np.zeros((out_h, out_w, img.shape[2]), np.float32)
        if hi_row > lo_row:
            flat = img.reshape(-1, img.shape[2])
            live = np.take(flat, idx[0], axis=0) * wts[0]
            for k in range(1, 4):
                live += np.take(flat, idx[k], axis=0) * wts[k]
            out[lo_row:hi_row] = live.reshape(hi_row - lo_row, out_w, -1)
    else:
        sx = rect.cx + c * ux[None, :] - s * vy[:, None]
        sy = rect.cy + s * ux[None, :] + c * vy[:, None]
        out = _bilinear(img, sx, sy, border)
    return _finish(out, image.dtype, color_order, value_range)


def _finish(out, dtype, color_order, value_range) -> np.ndarray:
    lo, hi = value_range
    scale = (hi - lo) / (255.0 if dtype == np.uint8 else 1.0)
    out = out * np.float32(scale) + np.float32(lo)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    elif color_order == "bgr":
        out = out[..., ::-1]
    return np.ascontiguousarray(out, dtype=np.float32)


@functools.lru_cache(maxsize=32)
def _plan(h: int, w: int, rect: Rect, out_w: int, out_h: int, border: str):
    """Flat source indices and bilinear weights of an axis-aligned sampling, for the output rows
    that read the frame at all (letterbox padding rows stay zero). Cached per frame size and
    rect: a stream's frames share them, and the four tiles add four entries."""
    xs = rect.cx + (np.arange(out_w, dtype=np.float32) / out_w - 0.5) * rect.width
    ys = rect.cy + (np.arange(out_h, dtype=np.float32) / out_h - 0.5) * rect.height

    def axis(pos, n):
        i0 = np.floor(pos)
        f = (pos - i0).astype(np.float32)
        i0 = i0.astype(np.int64)
        w0, w1 = 1.0 - f, f
        if border == "zero":
            w0 = np.where((i0 >= 0) & (i0 < n), w0, 0.0).astype(np.float32)
            w1 = np.where((i0 + 1 >= 0) & (i0 + 1 < n), w1, 0.0).astype(np.float32)
        return np.clip(i0, 0, n - 1), np.clip(i0 + 1, 0, n - 1), w0, w1

    x0, x1, wx0, wx1 = axis(xs, w)
    y0, y1, wy0, wy1 = axis(ys, h)
    live = np.nonzero((wy0 != 0) | (wy1 != 0))[0]
    if live.size == 0:
        return 0, 0, None, None
    lo, hi = int(live[0]), int(live[-1]) + 1
    y0, y1, wy0, wy1 = y0[lo:hi, None], y1[lo:hi, None], wy0[lo:hi, None], wy1[lo:hi, None]
    idx = [(yy * w + xx).ravel() for yy, xx in ((y0, x0), (y0, x1), (y1, x0), (y1, x1))]
    wts = [(a * b).reshape(-1, 1) for a, b in ((wy0, wx0), (wy0, wx1), (wy1, wx0), (wy1, wx1))]
    return lo, hi, np.stack(idx), np.stack(wts).astype(np.float32)


def _bilinear(img: np.ndarray, sx: np.ndarray, sy: np.ndarray, border: str) -> np.ndarray:
    h, w, ch = img.shape
    flat = img.reshape(-1, ch)
    if border == "zero":
        # neighbours outside the frame read 0: their weights are zeroed below
        fx0 = np.floor(sx)
        fy0 = np.floor(sy)
        vx0, vx1 = (fx0 >= 0) & (fx0 < w), (fx0 >= -1) & (fx0 < w - 1)
        vy0, vy1 = (fy0 >= 0) & (fy0 < h), (fy0 >= -1) & (fy0 < h - 1)
        fx = (sx - fx0).astype(np.float32)
        fy = (sy - fy0).astype(np.float32)
        x0 = np.clip(fx0, 0, w - 1).astype(np.int32)
        y0 = np.clip(fy0, 0, h - 1).astype(np.int32)
        x1 = np.clip(fx0 + 1, 0, w - 1).astype(np.int32)
        y1 = np.clip(fy0 + 1, 0, h - 1).astype(np.int32)
        weights = (
            (1 - fx) * (1 - fy) * (vx0 & vy0),
            fx * (1 - fy) * (vx1 & vy0),
            (1 - fx) * fy * (vx0 & vy1),
            fx * fy * (vx1 & vy1),
        )
        idx = (y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1)
    else:
        # sampling at coordinates clamped to the frame is what a replicated border reads
        sx = np.clip(sx, 0, w - 1)
        sy = np.clip(sy, 0, h - 1)
        x0 = sx.astype(np.int32)  # floor: sx >= 0
        y0 = sy.astype(np.int32)
        fx = (sx - x0).astype(np.float32)
        fy = (sy - y0).astype(np.float32)
        dx = (x0 < w - 1).astype(np.int32)
        dy = np.where(y0 < h - 1, w, 0).astype(np.int32)
        i00 = y0 * w + x0
        w11 = fx * fy
        weights = (1.0 - fx - fy + w11, fx - w11, fy - w11, w11)
        idx = (i00, i00 + dx, i00 + dy, i00 + dy + dx)
    out = np.take(flat, idx[0], axis=0) * weights[0][..., None]
    for i, wt in zip(idx[1:], weights[1:]):
        out += np.take(flat, i, axis=0) * wt[..., None]
    return out


def sample_native(image: np.ndarray, rect: Rect, out_size: tuple[int, int]) -> np.ndarray:
    """Sample ``rect`` keeping the frame's dtype, channels and channel order (replicated
    border). A uint8 frame gives a rounded uint8 crop; a float frame a crop of the same dtype."""
    out_w, out_h = out_size
    img = image if image.ndim == 3 else image[..., None]
    c, s = math.cos(rect.rotation), math.sin(rect.rotation)
    ux = (np.arange(out_w, dtype=np.float32) / out_w - 0.5) * rect.width
    vy = (np.arange(out_h, dtype=np.float32) / out_h - 0.5) * rect.height
    sx = rect.cx + c * ux[None, :] - s * vy[:, None]
    sy = rect.cy + s * ux[None, :] + c * vy[:, None]
    out = _bilinear(img, sx, sy, "replicate")
    if image.dtype == np.uint8:
        out = np.clip(np.rint(out), 0, 255)
    out = out.astype(image.dtype)
    if image.ndim == 2:
        out = out[..., 0]
    return np.ascontiguousarray(out)
