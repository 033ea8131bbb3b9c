"""Front-ends shared by runtime and training: log-mel audio features, face crop normalisation."""

from .audio import LogMelParams, audio_features, log_mel, resample
from .face import FaceParams, normalize_face

__all__ = ["FaceParams", "LogMelParams", "audio_features", "log_mel", "normalize_face", "resample"]
