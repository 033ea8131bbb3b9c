"""Face crop normalisation, in numpy: the same code prepares training faces and live crops."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .. import _validate

FACE_EXPECTED = "a face crop of shape (H, W) or (H, W, 1|3), uint8 or float in [0, 1]"


@dataclass(frozen=True)
class FaceParams:
    """Face crop parameters, stored in a bundle's ``model.json`` under ``face``.

    Attributes:
        size: Side of the square grayscale crop the face encoder takes (pixels).
        mean: Subtracted after scaling pixels to [0, 1].
        std: Divides after the mean is subtracted.
        color_order: Channel order of 3-channel input: ``"bgr"`` (OpenCV) or ``"rgb"``.
        eye_line: Where the face encoder expects the eyes, for full frames: the eye midpoint at
            (0.5, ``eye_line``) of the crop side, the eyes ``eye_distance`` of the side apart
            (FER2013's median framing is 0.39 and 0.345). ``None`` (older bundles): the
            detector's box enlarged by a margin, eyes levelled.
        eye_distance: see ``eye_line``; both or neither.
    """

    size: int = 48
    mean: float = 0.5
    std: float = 0.5
    color_order: str = "bgr"
    eye_line: float | None = None
    eye_distance: float | None = None

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"size must be >= 8, got {self.size}")
        if self.std <= 0:
            raise ValueError(f"std must be > 0, got {self.std}")
        if self.color_order not in ("bgr", "rgb"):
            raise ValueError(f"color_order must be 'bgr' or 'rgb', got {self.color_order!r}")
        if (self.eye_line is None) != (self.eye_distance is None):
            raise ValueError("eye_line and eye_distance go together (both or neither)")
        if self.eye_line is not None and not (
            0.1 <= self.eye_line <= 0.9 and 0.1 <= self.eye_distance <= 0.9
        ):
            raise ValueError(
                f"eye_line ({self.eye_line}) and eye_distance ({self.eye_distance}) are "
                "fractions of the crop side in [0.1, 0.9]"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FaceParams:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def to_gray(img: np.ndarray, color_order: str = "bgr") -> np.ndarray:
    """Grayscale float64 in [0, 1] from uint8/float, 1- or 3-channel input (ITU-R BT.601 luma)."""
    x = img.astype(np.float64)
    if img.dtype == np.uint8:
        x /= 255.0
    if x.ndim == 3:
        if x.shape[2] == 1:
            x = x[..., 0]
        else:
            r, g, b = (
                (x[..., 2], x[..., 1], x[..., 0])
                if color_order == "bgr"
                else (x[..., 0], x[..., 1], x[..., 2])
            )
            x = 0.299 * r + 0.587 * g + 0.114 * b
    return x


def resize_area(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D float image to (size, size).

    Downscaling averages the source pixels each output pixel covers (like OpenCV's INTER_AREA);
    upscaling interpolates bilinearly. No OpenCV needed, so the runtime stays numpy-only.
    """
    h, w = img.shape
    if (h, w) == (size, size):
        return img.copy()
    out = img
    for axis, n in ((0, h), (1, w)):
        if n >= size:
            # fractional box filter: weight of source pixel j in output pixel i
            edges = np.linspace(0.0, n, size + 1)
            lo, hi = edges[:-1, None], edges[1:, None]
            j = np.arange(n)[None, :]
            weight = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)
            weight /= weight.sum(axis=1, keepdims=True)
        else:
            pos = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
            lo_i = np.floor(pos).astype(int)
            hi_i = np.minimum(lo_i + 1, n - 1)
            frac = pos - lo_i
            weight = np.zeros((size, n))
            weight[np.arange(size), lo_i] += 1 - frac
            weight[np.arange(size), hi_i] += frac
        out = np.tensordot(weight, out, axes=([1], [axis]))
        if axis == 1:
            out = out.T
    return out


def normalize_face(face: object, params: FaceParams, name: str = "face") -> np.ndarray:
    """Turn one face crop into the face encoder's input.

    Args:
        face: (H, W) or (H, W, 1|3) crop, uint8 or float in [0, 1], BGR or RGB per
            ``params.color_order``.
        params: face parameters from the model bundle.
        name: argument name used in error messages.

    Returns:
        float32 array of shape (1, size, size), normalised with the bundle's mean and std.

    Raises:
        InputError: on any malformed input.
    """
    img = _validate.image(name, face, FACE_EXPECTED)
    gray = resize_area(to_gray(img, params.color_order), params.size)
    return np.ascontiguousarray(((gray - params.mean) / params.std)[None], dtype=np.float32)
