"""The Source protocol: everything a stream consumes, on one monotonic clock in milliseconds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..results import Modality


@dataclass(frozen=True)
class AudioChunk:
    """PCM samples whose first sample was captured at ``t_ms``.

    Attributes:
        t_ms: capture time of the first sample (ms, source clock).
        pcm: float32 mono samples, shape (samples,).
        sample_rate: their rate in Hz.
    """

    t_ms: float
    pcm: np.ndarray
    sample_rate: int


@dataclass(frozen=True)
class VideoFrame:
    """One image captured at ``t_ms``.

    Attributes:
        t_ms: capture time (ms, source clock).
        image: (H, W) or (H, W, 3) uint8 image.
        is_face: True when the image is already a face crop (no detection needed).
    """

    t_ms: float
    image: np.ndarray
    is_face: bool = False


@dataclass(frozen=True)
class HealthEvent:
    """A device changed state: ``ok=False`` when it was lost, ``True`` when it came back.

    Attributes:
        t_ms: when it happened (ms, source clock).
        modality: which input it concerns.
        ok: the device works (again).
        message: what happened, for the result's ``missing`` reason.
    """

    t_ms: float
    modality: Modality
    ok: bool
    message: str


@dataclass(frozen=True)
class Tick:
    """A heartbeat carrying only the time: live sources send it while no data arrives, so a
    stream keeps emitting (degraded) results when every device is silent or gone."""

    t_ms: float


Event = AudioChunk | VideoFrame | HealthEvent | Tick


@runtime_checkable
class Source(Protocol):
    """Anything that yields :data:`Event` objects in non-decreasing time order.

    ``events()`` may block while waiting for a device; it ends when the source is exhausted.
    ``close()`` releases devices and makes a blocked ``events()`` return.
    """

    def events(self) -> Iterator[Event]: ...

    def close(self) -> None: ...
