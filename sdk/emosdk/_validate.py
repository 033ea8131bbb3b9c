"""Input checks shared by the public entry points.

Each helper returns a clean array or raises :class:`~emosdk.errors.InputError` whose message
names the argument and the expected form. Nothing else may escape from user input.
"""

from __future__ import annotations

import numbers

import numpy as np

from .errors import InputError

AUDIO_DTYPES = (np.int16, np.int32, np.float32, np.float64)
IMAGE_DTYPES = (np.uint8, np.float32, np.float64)
MIN_SAMPLE_RATE = 4_000
MAX_SAMPLE_RATE = 384_000
MAX_AUDIO_CHANNELS = 2
MAX_FLOAT_PEAK = 2.0  # float PCM is [-1, 1]; a little overshoot is tolerated, int-scaled is not
MAX_IMAGES = 2000  # images per predict window
MAX_ASPECT = 16  # no camera frame or face crop is 16 times wider than high (or higher)


def describe(x: object) -> str:
    """A short description of a value for error messages (shape and dtype of arrays)."""
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__}"


def as_array(name: str, x: object, dtypes: tuple, expected: str) -> np.ndarray:
    """Check ``x`` is a numpy array of an accepted dtype, C-contiguous, finite and non-empty."""
    if not isinstance(x, np.ndarray):
        raise InputError(f"{name}: expected {expected} as a numpy.ndarray, got {describe(x)}")
    if x.dtype not in dtypes:
        allowed = ", ".join(np.dtype(d).name for d in dtypes)
        raise InputError(
            f"{name}: expected {expected} with dtype in ({allowed}), got dtype {x.dtype}"
        )
    if x.size == 0:
        raise InputError(f"{name}: expected {expected}, got an empty array of shape {x.shape}")
    if not x.flags.c_contiguous:
        raise InputError(
            f"{name}: expected a C-contiguous array ({expected}); got a strided view, "
            "pass numpy.ascontiguousarray(x)"
        )
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise InputError(f"{name}: expected finite values ({expected}), found NaN or inf")
    return x


def sample_rate(name: str, sr: object) -> int:
    """Check a sample rate: an integer number of Hz within [4 kHz, 384 kHz]."""
    if isinstance(sr, bool) or not isinstance(sr, numbers.Integral):
        if isinstance(sr, numbers.Real) and not isinstance(sr, bool) and float(sr).is_integer():
            sr = int(sr)
        else:
            raise InputError(f"{name}: expected an integer sample rate in Hz, got {sr!r}")
    sr = int(sr)
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise InputError(
            f"{name}: expected a sample rate between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, "
            f"got {sr}"
        )
    return sr


def audio(name: str, x: object) -> np.ndarray:
    """Check PCM audio and return it as float32 mono in [-1, 1].

    Accepts ``(samples,)`` or ``(samples, channels)`` with 1 or 2 channels; int16 and int32 PCM
    are scaled to [-1, 1]; stereo is averaged to mono.
    """
    expected = "PCM audio of shape (samples,) or (samples, channels<=2)"
    x = as_array(name, x, AUDIO_DTYPES, expected)
    if x.ndim == 2:
        if not 1 <= x.shape[1] <= MAX_AUDIO_CHANNELS:
            raise InputError(
                f"{name}: expected {expected}; got shape {x.shape} "
                f"({x.shape[1]} channels; pass channels last)"
            )
    elif x.ndim != 1:
        raise InputError(f"{name}: expected {expected}, got shape {x.shape}")
    if x.dtype == np.int16:
        y = x.astype(np.float32) / 32768.0
    elif x.dtype == np.int32:
        y = (x.astype(np.float64) / 2147483648.0).astype(np.float32)
    else:
        peak = float(np.abs(x).max())
        if peak > MAX_FLOAT_PEAK:
            raise InputError(
                f"{name}: expected float {expected} scaled to [-1, 1], got a peak of {peak:.3g}; "
                "pass int16 PCM as int16, or divide by its full-scale value"
            )
        y = x.astype(np.float32)
    if y.ndim == 2:
        y = y.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(y)


def image(name: str, x: object, expected: str) -> np.ndarray:
    """Check one image: ``(H, W)`` grayscale or ``(H, W, 3)`` colour, uint8 or float in [0, 1]."""
    x = as_array(name, x, IMAGE_DTYPES, expected)
    if x.ndim == 3 and x.shape[2] not in (1, 3):
        raise InputError(
            f"{name}: expected {expected}; got shape {x.shape} (channels must be 1 or 3)"
        )
    if x.ndim not in (2, 3):
        raise InputError(f"{name}: expected {expected}, got shape {x.shape}")
    if x.shape[0] < 8 or x.shape[1] < 8:
        raise InputError(f"{name}: expected {expected} at least 8x8 pixels, got shape {x.shape}")
    if max(x.shape[:2]) > MAX_ASPECT * min(x.shape[:2]):
        raise InputError(
            f"{name}: expected {expected}; got shape {x.shape}, {max(x.shape[:2])} by "
            f"{min(x.shape[:2])} pixels: a frame's channels must be 1 or 3 (an (H, W, C) array "
            "with more channels reads as C-pixel-wide images)"
        )
    if x.dtype.kind == "f" and (x.min() < 0.0 or x.max() > 1.0):
        raise InputError(f"{name}: expected {expected}; float images must lie in [0, 1]")
    return x


def positive_number(name: str, x: object, *, allow_zero: bool = False) -> float:
    """Check a finite real number greater than zero (or >= 0 with ``allow_zero``)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise InputError(f"{name}: expected a number, got {type(x).__name__}")
    v = float(x)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name}: expected a finite number {bound}, got {x!r}")
    return v


def image_list(images: object, name: str) -> list[np.ndarray | None] | None:
    """One image or a sequence of them as a list (None items kept)."""
    if images is None:
        return None
    if isinstance(images, np.ndarray):
        if images.ndim == 2 or (images.ndim == 3 and images.shape[2] in (1, 3)):
            return [images]
        if images.ndim == 3 and images.shape[2] in (2, 4):
            raise InputError(
                f"{name}: expected one image (H, W[, 1|3]) or a sequence (N, H, W[, 1|3]); got "
                f"shape {images.shape}: {images.shape[2]} channels (drop the alpha channel of "
                "RGBA/BGRA frames)"
            )
        if images.ndim == 4 and images.shape[3] not in (1, 3):
            raise InputError(
                f"{name}: expected a sequence of images (N, H, W[, 1|3]), got shape "
                f"{images.shape} ({images.shape[3]} channels)"
            )
        if images.ndim in (3, 4) and 0 < len(images) <= MAX_IMAGES:
            return list(images)
    elif isinstance(images, (list, tuple)):
        if not images:
            raise InputError(f"{name}: expected at least one image, got an empty sequence")
        if len(images) <= MAX_IMAGES:
            return list(images)
        raise InputError(f"{name}: expected at most {MAX_IMAGES} images per window")
    raise InputError(
        f"{name}: expected one image (H, W[, 1|3]) or a sequence of at most {MAX_IMAGES} "
        f"(a list, or an array (N, H, W[, 1|3])), got {describe(images)}"
    )
