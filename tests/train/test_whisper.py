"""train.whisper: the hash-checked converter, parity with CTranslate2 on the real weights, the
front end against torch.stft, and the audio branch's shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA

from emosdk.errors import ModelError
from emosdk.features.whisper import WhisperMelParams, whisper_log_mel
from train.data import read_audio
from train.whisper import (
    MODEL_SHA256,
    WeightsError,
    WhisperAudioBranch,
    WhisperBranchGraph,
    check_weights,
    default_model_path,
    load_encoder,
    read_ctranslate2,
)

PARITY_ATOL = 2e-4  # measured: 6.3e-5 on 1002_DFA_ANG_XX (outputs up to |10|)


@pytest.fixture(scope="module")
def clip_mel() -> np.ndarray:
    x = read_audio(DATA / "cremad" / "1002_DFA_ANG_XX.mp3", 16_000)
    return whisper_log_mel(x, WhisperMelParams())  # (260, 80)


@pytest.fixture(scope="module")
def encoder():
    torch.set_num_threads(1)
    return load_encoder()


def test_refuses_other_files(tmp_path):
    fake = tmp_path / "model.bin"
    fake.write_bytes(b"\x06\x00\x00\x00not whisper")
    with pytest.raises(WeightsError, match=MODEL_SHA256) as e:
        check_weights(fake)
    assert isinstance(e.value, ModelError)
    assert "refused" in str(e.value)
    with pytest.raises(WeightsError, match="expected a file"):
        check_weights(tmp_path / "missing.bin")


def test_weights_file_is_pinned():
    path = check_weights()
    assert path == default_model_path() and path.stat().st_size == 75_537_502
    v = read_ctranslate2(path, "encoder/")
    assert v["encoder/conv1/weight"].shape == (384, 80, 3)
    assert v["encoder/conv1/weight"].dtype == np.float16
    assert v["encoder/position_encodings/encodings"].shape == (1500, 384)
    blocks = {k.split("/")[1] for k in v if k.split("/")[1].startswith("layer_")}
    assert blocks == {"layer_0", "layer_1", "layer_2", "layer_3", "layer_norm"}


def test_parity_with_ctranslate2(encoder, clip_mel):
    import ctranslate2  # the train extra pins it as the reference

    model = ctranslate2.models.Whisper(
        str(default_model_path().parent), device="cpu", compute_type="float32", intra_threads=1
    )
    feats = ctranslate2.StorageView.from_array(np.ascontiguousarray(clip_mel.T[None]))
    ref = np.array(model.encode(feats, to_cpu=True))  # (1, 130, 384)
    with torch.no_grad():
        ours = encoder(torch.from_numpy(clip_mel)[None]).numpy()
    assert ours.shape == ref.shape == (1, 130, 384)
    assert np.abs(ours - ref).max() < PARITY_ATOL


def test_cut_encoder_equals_the_full_one_s_layers(encoder, clip_mel):
    x = torch.from_numpy(clip_mel)[None]
    with torch.no_grad():
        full = encoder.layers(x)
        cut = load_encoder(n_blocks=2).layers(x)
    assert len(full) == 6 and len(cut) == 3
    for a, b in zip(cut, full[:3]):
        torch.testing.assert_close(a, b)


def test_front_end_equals_torch_stft():
    with np.load(DATA / "whisper" / "mel_filters.npz") as z:
        filters = torch.from_numpy(z["mel_80"])
    worst = 0.0
    for p in sorted(Path(DATA / "cremad").glob("*.mp3")):
        x = read_audio(p, 16_000)
        stft = torch.stft(
            torch.from_numpy(x), 400, 160, window=torch.hann_window(400), return_complex=True
        )
        log_spec = torch.clamp(filters @ stft[..., :-1].abs() ** 2, min=1e-10).log10()
        log_spec = (torch.maximum(log_spec, log_spec.max() - 8.0) + 4.0) / 4.0
        ours = whisper_log_mel(x, WhisperMelParams())
        worst = max(worst, float(np.abs(ours - log_spec.T.numpy()).max()))
    assert worst < 1e-4, worst


@pytest.mark.parametrize("frames", [300, 301, 302, 303, 17])
def test_branch_steps(frames):
    branch = WhisperAudioBranch(n_blocks=1, d_audio=32).eval()
    with torch.no_grad():
        x = torch.randn(2, frames, 80)
        emb = branch(x)
        logits = branch.classify(emb)
    assert emb.shape == (2, frames // 4, 32)
    assert logits.shape == (2, 6)
    with torch.no_grad():  # the export graph computes the convolutions as MatMuls
        torch.testing.assert_close(WhisperBranchGraph(branch)(x), emb, atol=1e-4, rtol=0)
