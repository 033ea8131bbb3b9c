"""What one Whisper fine-tuning run is, for the scripts that train, export and report it: its
configuration (:class:`Config`, every default the shipped recipe), its data, its branch with the
pretrained weights, the scores of its predictions, and loading a finished run's branch.

A library module (no ``__main__``): :mod:`train.train_speech` trains a run, and
:mod:`train.export_speech` exports one, without either importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from emosdk.metrics import classification_report

from . import LABELS
from .speech_data import Utterance, cremad_partition, features, other_corpus, predict_window
from .whisper import WhisperAudioBranch, encoder_state_dict


@dataclass
class Config:
    """One fine-tuning run; every default is the shipped recipe."""

    out: Path = Path("runs/speech/ft/p1")
    partition: int = 1  # CREMA-D partition (its Test speakers are held out also with --shipped)
    shipped: bool = False  # train on all but partition 1 Test (+ RAVDESS, EmoDB)
    exclude: tuple[str, ...] = ()  # corpora left out of --shipped training (and scored)
    n_blocks: int = 2  # Whisper blocks kept
    d_audio: int = 128  # audio_emb width (the fusion's audio input)
    freeze_stem: bool = True  # keep the two convolutions frozen (generic acoustics; ~10% faster)
    epochs: int = 6
    batch: int = 16
    lr: float = 1e-3  # layer mix, projection, head
    lr_encoder: float = 5e-5  # pretrained layers
    weight_decay: float = 0.01
    warmup: float = 0.05  # share of the steps
    head_only: float = 0.0  # share of the fine-tuning steps first training only the new layers
    probe_epochs: int = 20  # epochs of the new layers alone on cached frozen states, first
    probe_lr: float = 2e-3
    label_smoothing: float = 0.1
    augment: bool = True
    spec_masks: bool = True
    seed: int = 0
    threads: int = 1
    save_every: int = 100
    limit: int = 0  # smoke runs: at most this many clips per split (0: all)
    max_steps: int = 0  # smoke runs: stop after this many steps (0: the schedule)
    cache_dir: Path = Path("runs/speech/cache")
    augment_params: dict = field(default_factory=dict)  # overrides of Augment's fields


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse square-root frequency weights with mean 1."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = 1.0 / np.sqrt(np.maximum(counts, 1.0))
    return torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32)


def run_data(cfg: Config) -> tuple[list[Utterance], dict[str, list[Utterance]]]:
    """(training utterances, evaluation sets by name) of a run."""
    crema = cremad_partition(cfg.partition)
    test = [u for u in crema if u.split == "Test"]
    if not cfg.shipped:
        train = [u for u in crema if u.split == "Train"]
        evals = {
            "dev": [u for u in crema if u.split == "Development"],
            "test": test,
        }
    else:
        held = {u.speaker for u in test}
        train = [u for u in crema if u.speaker not in held]
        evals = {"test": test}
        for corpus in ("ravdess", "emodb"):
            utts = other_corpus(corpus)
            if corpus in cfg.exclude:
                evals[corpus] = utts
            else:
                train += utts
    if cfg.limit:
        rng = np.random.default_rng(cfg.seed)
        train = [train[i] for i in sorted(rng.permutation(len(train))[: cfg.limit])]
        evals = {k: v[: max(1, cfg.limit // 4)] for k, v in evals.items()}
    return train, evals


def build_branch(cfg: Config) -> WhisperAudioBranch:
    branch = WhisperAudioBranch(n_blocks=cfg.n_blocks, d_audio=cfg.d_audio, n_classes=len(LABELS))
    sd = encoder_state_dict()
    own = branch.encoder.state_dict()
    branch.encoder.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=True)
    if cfg.freeze_stem:
        for m in (branch.encoder.conv1, branch.encoder.conv2):
            m.requires_grad_(False)
    return branch


@torch.no_grad()
def predict_logits(
    branch: WhisperAudioBranch, utts: list[Utterance], pcm: dict[str, np.ndarray], batch: int = 32
) -> np.ndarray:
    """Logits (N, n_classes) of each clip on ``Recognizer.predict``'s window (equal lengths
    batched)."""
    branch.eval()
    mels = [features(predict_window(pcm[u.name])) for u in utts]
    out = np.zeros((len(utts), len(LABELS)), np.float32)
    by_len: dict[int, list[int]] = {}
    for i, m in enumerate(mels):
        by_len.setdefault(len(m), []).append(i)
    for idx in by_len.values():
        for s in range(0, len(idx), batch):
            part = idx[s : s + batch]
            x = torch.from_numpy(np.stack([mels[i] for i in part]))
            out[part] = branch.classify(branch(x)).numpy()
    return out


def scores(utts: list[Utterance], logits: np.ndarray) -> dict:
    rep = classification_report([u.label for u in utts], logits.argmax(-1).tolist(), LABELS)
    return {k: rep[k] for k in ("n", "accuracy", "macro_f1", "micro_f1", "uar", "per_class")} | {
        "confusion": rep["confusion"]
    }


def load_branch(folder: Path) -> WhisperAudioBranch:
    """The trained branch of a finished run folder (``model.pt``), in eval mode."""
    state = torch.load(folder / "model.pt", weights_only=False)
    cfg = state["config"]
    branch = WhisperAudioBranch(n_blocks=cfg["n_blocks"], d_audio=cfg["d_audio"])
    branch.load_state_dict(state["model"])
    return branch.eval()
