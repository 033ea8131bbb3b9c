"""The Source protocol: everything a stream consumes, on one monotonic clock in milliseconds."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import InputError
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


@dataclass(frozen=True)
class SourceInfo:
    """What a source declares about itself. Every field has a default, so a source that
    declares nothing (no ``info`` attribute) is read as ``SourceInfo()``.

    Attributes:
        provides: the modalities the source can deliver, or ``None`` when it does not say (then
            a modality is missing only when its data is). A stream reports the others as
            missing from the first result on, with ``absent_reasons`` or "microphone/camera not
            used".
        absent_reasons: modality -> why the source does not deliver it (e.g. "the file has no
            video stream").
        lateness_ms: how much later than a later event of another modality an event may arrive
            (live sources: a microphone block arrives after its last sample, a camera frame at
            once). A stream closes a window when every live modality has delivered up to its
            end, or when an event this much later shows that one lags. 0 for sources that
            deliver in time order (files, arrays).
    """

    provides: tuple[Modality, ...] | None = None
    absent_reasons: Mapping[Modality, str] = field(default_factory=dict)
    lateness_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.provides is not None:
            provides = tuple(self.provides)
            if not all(isinstance(m, Modality) for m in provides):
                raise InputError(
                    f"SourceInfo.provides: expected a tuple of Modality, got {self.provides!r}"
                )
            object.__setattr__(self, "provides", provides)
        if not isinstance(self.absent_reasons, Mapping) or not all(
            isinstance(m, Modality) and isinstance(r, str) for m, r in self.absent_reasons.items()
        ):
            raise InputError(
                "SourceInfo.absent_reasons: expected a mapping Modality -> str, got "
                f"{self.absent_reasons!r}"
            )
        object.__setattr__(self, "absent_reasons", MappingProxyType(dict(self.absent_reasons)))
        lateness = self.lateness_ms
        if (
            isinstance(lateness, bool)
            or not isinstance(lateness, numbers.Real)
            or not (0.0 <= lateness <= 60_000.0)
        ):
            raise InputError(
                f"SourceInfo.lateness_ms: expected a number in [0, 60000], got {lateness!r}"
            )
        object.__setattr__(self, "lateness_ms", float(lateness))


@runtime_checkable
class Source(Protocol):
    """Anything that yields :data:`Event` objects in non-decreasing time order.

    ``events()`` may block while waiting for a device; it ends when the source is exhausted.
    ``close()`` releases devices and makes a blocked ``events()`` return. A source may also
    have an ``info`` attribute, a :class:`SourceInfo` saying what it delivers (derive from
    :class:`SourceBase` to get the defaults).
    """

    def events(self) -> Iterator[Event]: ...

    def close(self) -> None: ...


class SourceBase:
    """A convenient base for sources: ``info`` defaults to :class:`SourceInfo`, ``close()`` does
    nothing, and a source is a context manager. Subclasses implement :meth:`events`."""

    info: SourceInfo = SourceInfo()

    def events(self) -> Iterator[Event]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds (nothing by default)."""

    def __enter__(self) -> SourceBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def source_info(source: object) -> SourceInfo:
    """The :class:`SourceInfo` a source declares (its ``info``), or the defaults.

    Raises:
        InputError: ``info`` is present but not a :class:`SourceInfo`.
    """
    info = getattr(source, "info", None)
    if info is None:
        return SourceInfo()
    if not isinstance(info, SourceInfo):
        raise InputError(
            f"source.info: expected an emosdk.capture.SourceInfo, got {type(info).__name__}"
        )
    return info


#: timestamps beyond this (about 3,000 years in milliseconds) are refused: adding a hop to them
#: would no longer change them in float64
MAX_T_MS = 1e14


def event_time(name: str, t: object) -> float:
    """Check an event timestamp: a finite real number of milliseconds within +-``MAX_T_MS``."""
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise InputError(f"{name}: expected a finite number of milliseconds, got {t!r}")
    value = float(t)
    if not math.isfinite(value) or abs(value) > MAX_T_MS:
        raise InputError(
            f"{name}: expected a finite number of milliseconds within +-{MAX_T_MS:.0e}, got {t!r}"
        )
    return value
