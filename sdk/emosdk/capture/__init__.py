"""Capture sources: the Source protocol and its implementations."""

from .arrays import ArraySource
from .base import AudioChunk, Event, HealthEvent, Source, Tick, VideoFrame
from .live import CameraSource, MergedSource, MicrophoneSource, RetryingSource, live_source, now_ms

__all__ = [
    "ArraySource",
    "AudioChunk",
    "CameraSource",
    "Event",
    "HealthEvent",
    "MergedSource",
    "MicrophoneSource",
    "RetryingSource",
    "Source",
    "Tick",
    "VideoFrame",
    "live_source",
    "now_ms",
]
