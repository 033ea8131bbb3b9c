"""Shapes and masked-modality behaviour of the training modules, and the fixture bundle."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from train import LABELS  # noqa: E402
from train.models import (  # noqa: E402
    AudioEncoder,
    AuxFormerDeploy,
    FaceEncoder,
    auxformer_loss,
    count_params,
)

FIXTURE = ROOT / "tests" / "data" / "fixture_bundle"


@pytest.fixture(scope="module")
def fusion() -> AuxFormerDeploy:
    torch.manual_seed(0)
    return AuxFormerDeploy(32, 24, d_model=32, n_heads=2, n_cross=1, n_mem=1).eval()


@pytest.mark.parametrize("frames", [4, 7, 8, 298, 300, 301])
def test_audio_encoder_steps(frames: int) -> None:
    torch.manual_seed(0)
    enc = AudioEncoder(n_mels=64, d_audio=32, n_layers=1, n_heads=2).eval()
    emb = enc(torch.randn(2, frames, 64))
    assert emb.shape == (2, frames // 4, 32)
    assert enc.classify(emb).shape == (2, len(LABELS))


def test_audio_encoder_step_covers_its_frames() -> None:
    """Changing frames past the last full step changes nothing (they are trimmed)."""
    torch.manual_seed(0)
    enc = AudioEncoder(n_mels=64, d_audio=32, n_layers=1, n_heads=2).eval()
    x = torch.randn(1, 300, 64)
    y = torch.cat([x, torch.randn(1, 3, 64)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), enc(y))


def test_audio_encoder_normalization_inside() -> None:
    torch.manual_seed(0)
    enc = AudioEncoder(n_mels=8, d_audio=16, n_layers=1, n_heads=1).eval()
    x = torch.randn(1, 40, 8)
    with torch.no_grad():
        ref = enc(x)
        enc.set_normalization(torch.full((8,), 5.0), torch.full((8,), 2.0))
        torch.testing.assert_close(enc(x * 2.0 + 5.0), ref)


def test_face_encoder_shapes_and_size() -> None:
    torch.manual_seed(0)
    enc = FaceEncoder(d_video=128).eval()
    emb, logits = enc(torch.randn(3, 1, 48, 48))
    assert emb.shape == (3, 128) and logits.shape == (3, 7)
    assert count_params(enc) <= 5_000_000


def test_fusion_head_dim_contract() -> None:
    with pytest.raises(ValueError):
        AuxFormerDeploy(16, 16, d_model=60, n_heads=4)  # head_dim 15


@pytest.mark.parametrize(
    ("ta", "tv", "a_on", "v_on"),
    [
        (75, 15, True, True),
        (1, 1, True, True),
        (75, 15, False, True),
        (75, 15, True, False),
        (300, 30, False, True),
        (1, 30, True, False),
    ],
)
def test_fusion_shapes_and_masked_modality(
    fusion: AuxFormerDeploy, ta: int, tv: int, a_on: bool, v_on: bool
) -> None:
    B = 3
    am, vm = torch.full((B, ta), float(a_on)), torch.full((B, tv), float(v_on))
    out = fusion(
        torch.randn(B, ta, 32) * am[..., None], am, torch.randn(B, tv, 24) * vm[..., None], vm
    )
    assert len(out) == 4
    for t in out:
        assert t.shape == (B, len(LABELS))
        assert torch.isfinite(t).all()


def test_fusion_ignores_masked_positions(fusion: AuxFormerDeploy) -> None:
    """Padding (mask 0) must not change the result, whatever its features hold."""
    a, v = torch.randn(1, 20, 32), torch.randn(1, 10, 24)
    am, vm = torch.ones(1, 20), torch.ones(1, 10)
    am_pad = torch.cat([am, torch.zeros(1, 5)], dim=1)
    a_pad = torch.cat([a, torch.randn(1, 5, 32) * 100], dim=1)
    with torch.no_grad():
        ref = fusion(a, am, v, vm)[0]
        got = fusion(a_pad, am_pad, v, vm)[0]
    # positions are part of the embedding, so trailing padding leaves the present ones unchanged
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_fusion_missing_modality_excludes_its_aux_head(fusion: AuxFormerDeploy) -> None:
    am, vm = torch.ones(2, 10), torch.zeros(2, 5)
    with torch.no_grad():
        logits, l_av, l_a, _ = fusion(torch.randn(2, 10, 32), am, torch.zeros(2, 5, 24), vm)
    torch.testing.assert_close(logits, (l_av + l_a) / 2)


def test_auxformer_loss_backward(fusion: AuxFormerDeploy) -> None:
    fusion.train()
    am, vm = torch.ones(4, 10), torch.ones(4, 5)
    vm[0] = 0
    am[1] = 0
    out = fusion(torch.randn(4, 10, 32), am, torch.randn(4, 5, 24), vm)
    loss = auxformer_loss(out, torch.tensor([0, 1, 2, 3]), am, vm)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in fusion.proj_a.parameters())
    fusion.eval()


def test_fixture_bundle_loads_and_runs() -> None:
    ort = pytest.importorskip("onnxruntime")
    from emosdk.models.bundle import load_bundle

    b = load_bundle(FIXTURE)
    assert b.name == "fixture-random"
    assert b.labels == LABELS
    assert b.size_bytes < 2_000_000
    fusion = b.graphs["fusion"]
    assert [t.name for t in fusion.inputs] == ["audio", "audio_mask", "video", "video_mask"]
    assert fusion.outputs[0].name == "logits"
    da, dv = fusion.input("audio").shape[-1], fusion.input("video").shape[-1]
    sess = ort.InferenceSession(str(b.graph_path("fusion")), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for ta, tv, a_on, v_on in [(74, 15, 1, 1), (74, 15, 0, 1), (74, 15, 1, 0), (1, 1, 1, 1)]:
        feeds = {
            "audio": rng.standard_normal((3, ta, da), np.float32) * a_on,
            "audio_mask": np.full((3, ta), a_on, np.float32),
            "video": rng.standard_normal((3, tv, dv), np.float32) * v_on,
            "video_mask": np.full((3, tv), v_on, np.float32),
        }
        logits = sess.run(["logits"], feeds)[0]
        assert logits.shape == (3, len(LABELS)) and np.isfinite(logits).all()
    enc = ort.InferenceSession(
        str(b.graph_path("audio_encoder")), providers=["CPUExecutionProvider"]
    )
    emb = enc.run(None, {"logmel": rng.standard_normal((1, 298, 64), np.float32)})[0]
    assert emb.shape == (1, 298 // b.stream.audio_frames_per_step, da)


def test_fixture_script_rebuilds_a_loadable_bundle(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from make_fixture_bundle import make_fixture_bundle

    from emosdk.models.bundle import load_bundle

    out = make_fixture_bundle(tmp_path / "b", sweep=False)
    b = load_bundle(out)
    assert set(b.graphs) == {"audio_encoder", "face_encoder", "fusion"}
    assert b.meta["data_card"]["summary"].startswith("RANDOM WEIGHTS")
