"""Capture sources: the Source protocol and its implementations."""

from .arrays import ArraySource
from .base import AudioChunk, Event, HealthEvent, Source, VideoFrame

__all__ = ["ArraySource", "AudioChunk", "Event", "HealthEvent", "Source", "VideoFrame"]
