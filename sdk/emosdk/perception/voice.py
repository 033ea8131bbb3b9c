"""Voice activity: is anyone speaking in a window of 16 kHz audio?

WebRTC's VAD (``webrtcvad-wheels``, in the ``capture`` extra: no model file, microseconds per
frame, wheels for x86-64 and aarch64) marks 30 ms frames as speech; a frame also needs some
energy, so the VAD's occasional votes on room noise do not count. Without the package an
energy-only rule is used, and ``VoiceActivity.method`` says which one runs.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger("emosdk")

FRAME_MS = 30


class VoiceActivity:
    """Speech detector over 30 ms frames.

    Args:
        method: ``"auto"`` (WebRTC VAD when installed, else energy), ``"webrtc"``, ``"energy"``.
        aggressiveness: WebRTC VAD mode 0 (permissive) to 3 (strict).
        min_rms: a frame quieter than this (full scale 1.0) is never speech.
        min_speech_ms: speech needed in a window for its audio to count as present.
        sample_rate: rate of the audio passed in (8, 16, 32 or 48 kHz for WebRTC).

    Raises:
        BackendUnavailableError: ``method="webrtc"`` without ``webrtcvad-wheels`` installed.
    """

    def __init__(
        self,
        method: str = "auto",
        aggressiveness: int = 2,
        min_rms: float = 0.003,
        min_speech_ms: float = 90.0,
        sample_rate: int = 16_000,
    ) -> None:
        self._webrtcvad = None
        self.aggressiveness = aggressiveness
        if method in ("auto", "webrtc"):
            try:
                import webrtcvad

                self._webrtcvad = webrtcvad
            except ImportError as e:
                if method == "webrtc":
                    from ..errors import BackendUnavailableError

                    raise BackendUnavailableError(
                        "WebRTC voice activity detection needs webrtcvad-wheels: pip install "
                        '"emosdk[capture]"'
                    ) from e
        elif method != "energy":
            from ..errors import ConfigError

            raise ConfigError(f"method: expected 'auto', 'webrtc' or 'energy', got {method!r}")
        self.method = "webrtc" if self._webrtcvad is not None else "energy"
        self.min_rms = min_rms
        self.min_speech_ms = min_speech_ms
        self.sample_rate = sample_rate
        self.frame_len = sample_rate * FRAME_MS // 1000

    def speech_frames(self, pcm: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """One bool per full 30 ms frame of ``pcm`` (float32 in [-1, 1]): speech or not.

        Frames that contain invalid (missing) samples are never speech.
        """
        n = len(pcm) // self.frame_len
        if n == 0:
            return np.zeros(0, bool)
        frames = pcm[: n * self.frame_len].reshape(n, self.frame_len)
        loud = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) >= self.min_rms
        if valid is not None:
            loud &= valid[: n * self.frame_len].reshape(n, self.frame_len).all(axis=1)
        if self._webrtcvad is None:
            return loud
        # WebRTC's VAD adapts to what it has heard: a fresh one per call (0.6 us) makes each
        # window's answer depend on that window alone, the same in any order or thread
        vad = self._webrtcvad.Vad(self.aggressiveness)
        pcm16 = (np.clip(frames, -1.0, 1.0) * 32767).astype("<i2")
        voiced = np.array(
            [
                bool(loud[i]) and vad.is_speech(pcm16[i].tobytes(), self.sample_rate)
                for i in range(n)
            ]
        )
        return voiced

    def has_speech(self, pcm: np.ndarray, valid: np.ndarray | None = None) -> tuple[bool, float]:
        """Whether a window holds at least ``min_speech_ms`` of speech, and how many ms it holds."""
        ms = float(self.speech_frames(pcm, valid).sum() * FRAME_MS)
        return ms >= self.min_speech_ms, ms
