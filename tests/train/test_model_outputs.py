"""Every model of train/models gives the outputs recorded in tests/data/model_outputs.npz.

The reference was recorded from the code before train/paper_models.py became the train/models
package (same seeds, same inputs), so a refactoring that changes a parameter's initialisation
order, a position table or a loss shows up here. When a model is changed on purpose, re-record:

    python tests/train/test_model_outputs.py --write

Covered: each registry model at size "smoke" (eval outputs, a training-mode forward with dropout
and its loss, every stage), AuxFormer and MulT at paper size, the seed modules (AudioEncoder,
FaceEncoder, AuxFormerDeploy with its loss) and the sinusoidal position tables.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

REFERENCE = ROOT / "tests" / "data" / "model_outputs.npz"
NAMES = (
    "auxformer",
    "auxformer_deploy",
    "vavl",
    "mult",
    "parthasarathy",
    "unimodal_audio",
    "unimodal_video",
    "hussain",
)
D_VIDEO, N_CLASSES = 10, 4
# (registry name, size, build overrides): smoke size for all, paper size where it is small
VARIANTS = [(n, "smoke", {}) for n in NAMES] + [
    ("auxformer", "paper", {}),
    ("mult", "paper", {}),
    ("vavl", "smoke", {"regression": True}),
    ("auxformer_deploy", "smoke", {"soft_labels": True}),
    ("hussain", "smoke", {"soft_labels": True}),
]


def _batch(d_audio: int, B: int = 3, ta: int = 40, tv: int = 9) -> dict[str, torch.Tensor]:
    """Random batch with ragged valid lengths (sample i loses 7 i audio, 2 i video steps)."""
    g = torch.Generator().manual_seed(0)
    am, vm = torch.zeros(B, ta), torch.zeros(B, tv)
    for i in range(B):
        am[i, : ta - 7 * i] = 1.0
        vm[i, : tv - 2 * i] = 1.0
    soft = torch.rand(B, N_CLASSES, generator=g)
    return {
        "audio": torch.randn(B, ta, d_audio, generator=g),
        "audio_mask": am,
        "video": torch.randn(B, tv, D_VIDEO, generator=g),
        "video_mask": vm,
        "label": torch.arange(B) % N_CLASSES,
        "soft": soft / soft.sum(dim=1, keepdim=True),
        "valence": torch.randn(B, generator=g),
        "arousal": torch.randn(B, generator=g),
    }


def _key(name: str, size: str, overrides: dict) -> str:
    return "/".join([name, size, *(f"{k}={v}" for k, v in sorted(overrides.items()))])


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def registry_outputs(build_model, hussain_d_audio: int) -> dict[str, np.ndarray]:
    """Outputs of every variant: eval forward, then per stage a training forward and loss."""
    out: dict[str, np.ndarray] = {}
    for name, size, overrides in VARIANTS:
        da = hussain_d_audio if name == "hussain" else 12
        torch.manual_seed(0)
        model = build_model(name, da, D_VIDEO, N_CLASSES, size=size, **overrides)
        batch = _batch(da)
        args = [batch[k] for k in ("audio", "audio_mask", "video", "video_mask")]
        key = _key(name, size, overrides)
        model.eval()
        with torch.no_grad():
            for k, t in model(*args).items():
                out[f"{key}/eval/{k}"] = _np(t)
        for stage in model.stages:
            model.set_stage(stage)
            model.train()
            torch.manual_seed(1)  # dropout draws
            res = model(*args)
            out[f"{key}/train_{stage}/logits"] = _np(res["logits"])
            out[f"{key}/train_{stage}/loss"] = _np(model.compute_loss(res, batch))
    return out


def seed_outputs(models) -> dict[str, np.ndarray]:
    """The bundle's seed modules at small widths (``models`` holds the classes)."""
    out: dict[str, np.ndarray] = {}
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    audio = models.AudioEncoder(n_mels=64, d_audio=32, n_layers=2, n_heads=2).eval()
    torch.manual_seed(0)
    face = models.FaceEncoder(d_video=16, widths=(8, 16, 16, 16)).eval()
    torch.manual_seed(0)
    fusion = models.AuxFormerDeploy(32, 16, d_model=32, n_heads=2, n_cross=2, n_mem=1).eval()
    mel = torch.randn(2, 301, 64, generator=g) - 6.0
    crops = torch.randn(4, 1, 48, 48, generator=g)
    with torch.no_grad():
        emb = audio(mel)
        out["seed/audio_emb"] = _np(emb)
        out["seed/audio_graph"] = _np(models.AudioEncoderGraph(audio)(mel))
        out["seed/audio_logits"] = _np(audio.classify(emb))
        f_emb, f_logits = face(crops)
        out["seed/face_emb"], out["seed/face_logits"] = _np(f_emb), _np(f_logits)
        am = torch.ones(2, emb.shape[1])
        am[1, -20:] = 0.0
        vm = torch.ones(2, 15)
        vm[1, -4:] = 0.0
        video = torch.randn(2, 15, 16, generator=g)
        for mode, a_on, v_on in (("av", 1.0, 1.0), ("audio_only", 1.0, 0.0), ("video", 0.0, 1.0)):
            res = fusion(emb * a_on, am * a_on, video * v_on, vm * v_on)
            for k, t in zip(("logits", "logits_av", "logits_audio", "logits_video"), res):
                out[f"seed/fusion/{mode}/{k}"] = _np(t)
            y = torch.tensor([1, 4])
            loss = models.auxformer_loss(res, y, am * a_on, vm * v_on, label_smoothing=0.1)
            out[f"seed/fusion/{mode}/loss"] = _np(loss)
    return out


def sinusoid_tables(sinusoid) -> dict[str, np.ndarray]:
    """The three position tables the models use, at even and odd widths.

    * ``deploy``: positions 0..T-1, frequencies 10000^(-2k/d), sin half then cos half
      (AuxFormerDeploy);
    * ``fairseq``: positions 1..T, frequencies 10000^(-k/(d/2-1)), sin half then cos half, a zero
      column for odd d (AuxFormer, MulT);
    * ``vaswani``: any positions, frequencies 10000^(-2k/d), interleaved sin/cos (Parthasarathy,
      the conformer's relative positions).
    """
    out = {}
    for d in (6, 7, 16, 30, 64, 130):
        t = torch.arange(23, dtype=torch.float32)
        out[f"sinusoid/fairseq/{d}"] = _np(sinusoid(t + 1, d, layout="halves", spacing="fairseq"))
        out[f"sinusoid/vaswani/{d}"] = _np(sinusoid(t - 11, d))
        if d % 2 == 0:
            out[f"sinusoid/deploy/{d}"] = _np(sinusoid(t, d, layout="halves"))
    return out


def all_outputs() -> dict[str, np.ndarray]:
    from train import models
    from train.models import HUSSAIN_D_AUDIO, build_model
    from train.models.layers import sinusoid

    torch.set_num_threads(1)
    return {
        **registry_outputs(build_model, HUSSAIN_D_AUDIO),
        **seed_outputs(models),
        **sinusoid_tables(sinusoid),
    }


@pytest.fixture(scope="module")
def outputs():
    n = torch.get_num_threads()
    try:
        yield all_outputs()
    finally:
        torch.set_num_threads(n)


def test_every_model_gives_the_recorded_outputs(outputs) -> None:
    with np.load(REFERENCE) as ref:
        assert sorted(outputs) == sorted(ref.files)
        for key in ref.files:
            # identical code gives identical bits on one machine; the tolerance only allows for
            # another CPU's BLAS summing in another order
            np.testing.assert_allclose(outputs[key], ref[key], rtol=1e-5, atol=1e-6, err_msg=key)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tests/train/test_model_outputs.py --write")
    np.savez_compressed(REFERENCE, **all_outputs())
    print(f"wrote {REFERENCE}")
