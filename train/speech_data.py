"""Speech data for the Whisper audio branch: PCM caches, the runtime's windows, augmentation.

Windows are what the runtime feeds the audio encoder (sdk/emosdk/recognizer.py):

* :func:`predict_window` is ``Recognizer.predict`` on one clip: a clip shorter than the model's
  window (3 s) sits centred in zeros, a longer clip is analysed whole. Evaluation uses it.
* :func:`train_window` is a window of the 0.5 s hop stream over the clip: a random 3 s crop of a
  longer clip, or the clip at a random place in 3 s of zeros. Training uses it.

Zeros are digital silence, and Whisper's front end clamps every window at its own ``max - 8``
(log10 units): the padding sits at that floor, as in Whisper's own pre-training (zeros to 30 s).
Training and the runtime both compute the features on the whole padded window, so they agree.

Augmentation (:class:`Augment`) works on the waveform before the front end (speed, gain, noise
including babble from other training speakers, reverberation with synthetic room impulse
responses, telephone band, clipping) and on the features (SpecAugment-style time and frequency
masks, :func:`spec_mask`). Its parameters and seeds differ from the robustness benchmark's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emosdk.features.whisper import WhisperMelParams, whisper_log_mel

from . import LABELS
from .corpora import load_corpus
from .data import DATA_ROOT, load_cremad_partition, read_audio
from .data import waveform_cache as cremad_waveforms

logger = logging.getLogger("emosdk.train")

SR = 16_000
WINDOW_S = 3.0
WINDOW = int(WINDOW_S * SR)  # samples of one stream window, as bundle.stream.window_s


@dataclass(frozen=True)
class Utterance:
    """One labelled clip of any corpus: name (unique across corpora), label, speaker, corpus."""

    name: str
    label: int
    speaker: str
    corpus: str
    split: str = ""  # CREMA-D partition split (Train / Development / Test); "" elsewhere


def cremad_partition(partition: int, root: Path = DATA_ROOT) -> list[Utterance]:
    """The clips of a CREMA-D partition file with their perceived labels and splits."""
    return [
        Utterance(c.name, c.label, c.speaker, "cremad", c.split)
        for c in load_cremad_partition(partition, root)
    ]


def other_corpus(name: str, root: Path = DATA_ROOT) -> list[Utterance]:
    """RAVDESS or EmoDB clips on the six project labels (train.corpora's explicit maps)."""
    corpus = load_corpus(name, root)
    return [
        Utterance(f"{name}/{Path(it.path).stem}", it.label, f"{name}/{it.speaker}", name)
        for it in corpus.items
    ]


def load_pcm(
    utts: list[Utterance], cache_dir: Path, root: Path = DATA_ROOT
) -> dict[str, np.ndarray]:
    """16 kHz float32 PCM by utterance name, decoded once and cached (int16) in ``cache_dir``."""
    out: dict[str, np.ndarray] = {}
    crema = [u.name for u in utts if u.corpus == "cremad"]
    if crema:
        out.update(cremad_waveforms(crema, SR, root, cache_dir))
    for corpus in sorted({u.corpus for u in utts} - {"cremad"}):
        cache = cache_dir / f"{corpus}_pcm_{SR}.npz"
        if cache.exists():
            with np.load(cache) as z:
                pcm = dict(zip(z["names"].tolist(), np.split(z["data"], z["offsets"][1:-1])))
        else:
            pcm = {}
            for it in load_corpus(corpus, root).items:
                x = np.clip(read_audio(Path(it.path), SR), -1.0, 1.0)
                pcm[f"{corpus}/{Path(it.path).stem}"] = np.round(x * 32767).astype(np.int16)
            names = sorted(pcm)
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(
                tmp,
                names=np.array(names),
                offsets=np.cumsum([0] + [len(pcm[k]) for k in names]),
                data=np.concatenate([pcm[k] for k in names]),
            )
            tmp.replace(cache)
            logger.info("cached %s PCM of %d clips in %s", corpus, len(names), cache)
        for u in utts:
            if u.corpus == corpus:
                out[u.name] = pcm[u.name].astype(np.float32) / 32767.0
    return out


def predict_window(pcm: np.ndarray, n: int = WINDOW) -> np.ndarray:
    """``Recognizer.predict``'s window: centred in ``n`` zeros if shorter, else the whole clip."""
    if len(pcm) >= n:
        return pcm
    out = np.zeros(n, np.float32)
    lead = (n - len(pcm)) // 2
    out[lead : lead + len(pcm)] = pcm
    return out


def train_window(pcm: np.ndarray, rng: np.random.Generator, n: int = WINDOW) -> np.ndarray:
    """A stream window over the clip: a random ``n``-sample crop, or the clip at a random place
    in ``n`` zeros."""
    if len(pcm) >= n:
        s = int(rng.integers(0, len(pcm) - n + 1))
        return pcm[s : s + n]
    out = np.zeros(n, np.float32)
    lead = int(rng.integers(0, n - len(pcm) + 1))
    out[lead : lead + len(pcm)] = pcm
    return out


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12)


def colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with a 1/f**exponent power spectrum (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    x = np.fft.irfft(spec / f ** (exponent / 2.0), n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def synthetic_rir(rt60: float, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """A synthetic room impulse response: a direct path, then exponentially decaying noise
    reaching -60 dB at ``rt60`` seconds (early reflections sparse, the tail dense)."""
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 6.9078
    tail[: int(0.003 * sr)] = 0.0  # about 1 m between the direct path and the first reflection
    # direct-to-reverberant energy ratio from -6 dB (far from the microphone) to +10 dB (close)
    rir = tail / np.sqrt(np.sum(tail**2)) * 10 ** (-rng.uniform(-6.0, 10.0) / 20)
    rir[0] = 1.0
    return (rir / np.sqrt(np.sum(rir**2))).astype(np.float32)


def fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]
    return y.astype(np.float32)


def fft_resample(x: np.ndarray, n_out: int) -> np.ndarray:
    """Band-limited resampling of a whole clip to ``n_out`` samples in the frequency domain."""
    spec = np.fft.rfft(x.astype(np.float64))
    m = n_out // 2 + 1
    spec = spec[:m] if len(spec) >= m else np.pad(spec, (0, m - len(spec)))
    return (np.fft.irfft(spec, n_out) * (n_out / len(x))).astype(np.float32)


def telephone(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A phone line: the 300-3400 Hz band and 8-bit mu-law quantisation."""
    spec = np.fft.rfft(x.astype(np.float64))
    f = np.fft.rfftfreq(len(x), 1 / SR)
    spec[(f < rng.uniform(250, 350)) | (f > rng.uniform(3200, 3600))] = 0.0
    y = np.fft.irfft(spec, len(x))
    peak = float(np.abs(y).max()) + 1e-9
    mu = 255.0
    q = np.sign(y / peak) * np.log1p(mu * np.abs(y / peak)) / np.log1p(mu)
    q = np.round(q * 127) / 127
    return (np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu * peak).astype(np.float32)


@dataclass(frozen=True)
class Augment:
    """Waveform augmentation of one training clip (before the window is cut), with probabilities.

    Speed perturbation resamples (pitch and tempo change together), gain spans quiet to loud
    microphones, noise is white/pink/brown or babble of 3-6 other training clips, reverberation
    uses :func:`synthetic_rir`. Each corruption is drawn independently, so some clips stay clean.
    """

    p_speed: float = 0.4
    speed: tuple[float, float] = (0.88, 1.12)
    p_gain: float = 0.8
    gain_db: tuple[float, float] = (-30.0, 6.0)
    p_noise: float = 0.3
    snr_db: tuple[float, float] = (0.0, 30.0)
    p_babble: float = 0.35  # share of the noise draws that are babble
    p_reverb: float = 0.2
    rt60: tuple[float, float] = (0.15, 1.0)
    p_telephone: float = 0.05
    p_clip: float = 0.05

    def __call__(
        self,
        pcm: np.ndarray,
        rng: np.random.Generator,
        babble_pool: list[np.ndarray] | None = None,
    ) -> np.ndarray:
        x = pcm.astype(np.float32)
        if rng.random() < self.p_speed:
            # factor > 1: faster and higher, as a tape played faster
            x = fft_resample(x, max(1, int(round(len(x) / rng.uniform(*self.speed)))))
        if rng.random() < self.p_reverb:
            x = fft_convolve(x, synthetic_rir(rng.uniform(*self.rt60), rng))
        if rng.random() < self.p_telephone:
            x = telephone(x, rng)
        if rng.random() < self.p_noise:
            if babble_pool and rng.random() < self.p_babble:
                noise = np.zeros(len(x), np.float32)
                for _ in range(int(rng.integers(3, 7))):
                    other = babble_pool[int(rng.integers(0, len(babble_pool)))]
                    other = np.resize(other, len(x)) if len(other) < len(x) else other
                    s = int(rng.integers(0, len(other) - len(x) + 1))
                    noise += other[s : s + len(x)] / _rms(other)
            else:
                noise = colored_noise(len(x), float(rng.choice([0.0, 1.0, 2.0])), rng)
            snr = rng.uniform(*self.snr_db)
            x = x + noise * (_rms(x) / _rms(noise) * 10 ** (-snr / 20))
        if rng.random() < self.p_gain:
            x = x * 10 ** (rng.uniform(*self.gain_db) / 20)
        if rng.random() < self.p_clip:
            limit = float(np.abs(x).max()) * rng.uniform(0.2, 0.6)
            x = np.clip(x, -limit, limit)
        return np.clip(x, -1.0, 1.0).astype(np.float32)


def spec_mask(
    mel: np.ndarray,
    rng: np.random.Generator,
    time_masks: int = 2,
    max_time: int = 25,
    freq_masks: int = 2,
    max_freq: int = 12,
) -> np.ndarray:
    """SpecAugment-style masking of one window's Whisper log-mel (frames, n_mels): masked cells
    take the window's silence floor (its max - 2 in Whisper's scaled units)."""
    out = mel.copy()
    floor = float(mel.max()) - 2.0
    T, M = mel.shape
    for _ in range(time_masks):
        w = int(rng.integers(0, max_time + 1))
        s = int(rng.integers(0, max(1, T - w)))
        out[s : s + w] = floor
    for _ in range(freq_masks):
        w = int(rng.integers(0, max_freq + 1))
        s = int(rng.integers(0, max(1, M - w)))
        out[:, s : s + w] = floor
    return out


def features(window: np.ndarray, params: WhisperMelParams | None = None) -> np.ndarray:
    """Whisper log-mel (frames, 80) of one window, with the runtime's function."""
    return whisper_log_mel(window, params or WhisperMelParams())


def label_counts(utts: list[Utterance]) -> dict[str, int]:
    counts = np.bincount([u.label for u in utts], minlength=len(LABELS))
    return {lab: int(c) for lab, c in zip(LABELS, counts)}
