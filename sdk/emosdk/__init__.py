"""emosdk: real-time audio-visual emotion recognition on the edge.

>>> from emosdk import Recognizer
>>> with Recognizer() as rec:                                        # doctest: +SKIP
...     for result in rec.stream(source="clip.mp4"):
...         print(result.label, result.scores, result.modalities, result.latency.total_ms)
"""

from __future__ import annotations

import logging

from .backends import available_backends
from .config import RecognizerConfig
from .errors import (
    BackendError,
    BackendUnavailableError,
    ConfigError,
    EmosdkError,
    InputError,
    ModelError,
    SourceError,
)
from .recognizer import Recognizer
from .results import EmotionResult, Modality

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "ConfigError",
    "EmosdkError",
    "EmotionResult",
    "InputError",
    "Modality",
    "ModelError",
    "Recognizer",
    "RecognizerConfig",
    "SourceError",
    "__version__",
    "available_backends",
]

logging.getLogger("emosdk").addHandler(logging.NullHandler())
