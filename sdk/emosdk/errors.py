"""The exceptions emosdk raises.

Every error the SDK raises on purpose derives from :class:`EmosdkError`. Bad input is an
:class:`InputError` (also a ``ValueError``, so ``except ValueError`` keeps working); a lost
modality is *not* an error, it is a degraded :class:`~emosdk.EmotionResult`.
"""

from __future__ import annotations


class EmosdkError(Exception):
    """Base class of every error raised by emosdk."""


class InputError(EmosdkError, ValueError):
    """An argument has the wrong type, dtype, rank, shape or value.

    The message always states the expected form, e.g.
    ``"audio: expected a 1-D (samples,) or 2-D (samples, channels<=2) array, got shape (3, 4, 5)"``.
    """


class ConfigError(EmosdkError, ValueError):
    """A configuration field is invalid or contradicts another field (both are named)."""


class ModelError(EmosdkError):
    """A model bundle is missing, malformed, or fails its integrity check (the file is named)."""


class BackendUnavailableError(EmosdkError):
    """A requested inference backend or optional component cannot run here.

    The message says what to install or build to make it available.
    """


class BackendError(EmosdkError):
    """An inference backend failed while running a graph."""


class SourceError(EmosdkError):
    """A capture source failed. Streams turn this into a degraded result, never a crash."""
