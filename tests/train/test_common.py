"""train/common.py: the helpers the training scripts share, and the rule that no script imports
another (a script is a module of train/ run as ``python -m train.<name>``)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from train.common import (  # noqa: E402
    AudioStageConfig,
    class_weights,
    cosine_lr,
    load_state,
    save_state,
    window_offsets,
)

TRAIN = ROOT / "train"


def _scripts() -> set[str]:
    return {p.stem for p in TRAIN.glob("*.py") if '__name__ == "__main__"' in p.read_text()}


def _train_imports(path: Path) -> set[str]:
    """Modules of train/ that ``path`` imports (relative or ``train.x``), first level only."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1:
                found |= {mod.split(".")[0]} if mod else {a.name for a in node.names}
            elif mod.startswith("train."):
                found.add(mod.split(".")[1])
            elif mod == "train":
                found |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("train.")}
    return found


def test_no_training_script_imports_another() -> None:
    scripts = _scripts()
    assert {"train_seed", "train", "train_audio", "train_face", "sweep", "ensemble"} <= scripts
    bad = {
        (p.stem, m)
        for p in TRAIN.glob("*.py")
        if p.stem in scripts
        for m in _train_imports(p) & (scripts - {p.stem})
    }
    assert not bad, sorted(bad)


def test_audio_stage_defaults_are_train_seeds() -> None:
    from train.train_seed import Config

    assert Config().audio_stage_config() == AudioStageConfig()
    cfg = Config(seed=3, max_steps=5, d_audio=64, audio_layers=2, audio_lr=3e-4)
    assert cfg.audio_stage_config() == AudioStageConfig(
        seed=3, max_steps=5, d_audio=64, layers=2, lr=3e-4
    )


def test_small_helpers() -> None:
    w = class_weights(np.array([0, 0, 0, 0, 1]), 3)  # class 2 absent: weight of a count of 1
    assert float(w[:2].mean()) == 1.0 and float(w[0]) == 0.5 * float(w[1])
    assert cosine_lr(0, 100, 10) == 0.1 and cosine_lr(10, 100, 10) == 1.0
    assert cosine_lr(100, 100, 10) == 0.0
    assert window_offsets(10, 4, None) == (3, 0, 4)  # centred crop
    assert window_offsets(4, 10, None) == (0, 3, 4)  # centred in the window
    src, dst, n = window_offsets(10, 4, np.random.default_rng(0))
    assert dst == 0 and n == 4 and 0 <= src <= 6


def test_save_state_round_trip(tmp_path: Path) -> None:
    assert load_state(tmp_path / "missing.pt") is None
    save_state(tmp_path / "s.pt", model={"w": torch.ones(2)}, step=7)
    state = load_state(tmp_path / "s.pt")
    assert state["step"] == 7 and torch.equal(state["model"]["w"], torch.ones(2))
    assert not (tmp_path / "s.tmp").exists()
