"""The seed model's torch modules from a ``python -m train.train_seed --out DIR`` folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import FER_CLASSES, LABELS
from .models import AudioEncoder, AuxFormerDeploy, FaceEncoder


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
