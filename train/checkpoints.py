"""The seed model's torch modules from a ``python -m train.train_seed --out DIR`` folder, and the
bundle graph each of them is exported to."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from emosdk.errors import ModelError

from . import FER_CLASSES, LABELS
from .models import AudioEncoder, AudioEncoderGraph, AuxFormerDeploy, FaceEncoder


def build_modules(config: dict, n_mels: int) -> dict[str, torch.nn.Module]:
    """The seed model's three modules from a train_seed config (random weights)."""
    audio = AudioEncoder(
        n_mels=n_mels,
        d_audio=config["d_audio"],
        n_layers=config["audio_layers"],
        n_heads=config["audio_heads"],
        n_classes=len(LABELS),
    )
    face = FaceEncoder(
        d_video=config["d_video"],
        widths=tuple(int(w) for w in str(config["face_widths"]).split(",")),
        n_classes=len(FER_CLASSES),
    )
    fusion = AuxFormerDeploy(
        config["d_audio"],
        config["d_video"],
        n_classes=len(LABELS),
        d_model=config["d_model"],
        n_heads=config["fusion_heads"],
        n_cross=config["fusion_cross"],
        n_mem=config["fusion_mem"],
    )
    return {"audio": audio, "face": face, "fusion": fusion}


def load_checkpoints(folder: Path, n_mels: int) -> dict[str, torch.nn.Module]:
    """Modules with the selected weights of a ``python -m train.train_seed --out`` folder."""
    config = json.loads((folder / "config.json").read_text())
    modules = build_modules(config, n_mels)
    for stage, module in modules.items():
        path = folder / f"{stage}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no final checkpoint for stage {stage!r}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["model"])
        module.eval()
    return modules


CHECKPOINT_FILES = ("config.json", "face.pt", "audio.pt", "fusion.pt")
"""What a finished ``python -m train.train_seed --out`` folder holds (the selected states)."""


def load_checkpoint_folder(folder: str | Path, n_mels: int) -> tuple[dict[str, nn.Module], dict]:
    """The three modules (eval mode) and the config of a finished train_seed output folder.

    Args:
        folder: ``--out`` of a ``python -m train.train_seed`` run.
        n_mels: mel bands of the front-end the audio encoder was trained on.

    Returns:
        (``{"audio": ..., "face": ..., "fusion": ...}``, the run's config.json as a dict).

    Raises:
        ModelError: the folder lacks one of :data:`CHECKPOINT_FILES` (all missing ones named).
    """
    d = Path(folder)
    missing = [f for f in CHECKPOINT_FILES if not (d / f).is_file()]
    if missing:
        raise ModelError(
            f"{d}: missing {missing}; expected a finished `python -m train.train_seed --out {d}` "
            "folder"
        )
    return load_checkpoints(d, n_mels), json.loads((d / "config.json").read_text())


def graph_modules(modules: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Bundle graph role -> the torch module its ONNX graph is exported from (eval mode)."""
    return {
        "audio_encoder": AudioEncoderGraph(modules["audio"]).eval(),
        "face_encoder": modules["face"],
        "fusion": modules["fusion"],
    }
