"""train.speech_data windows and augmentation, a smoke-sized fine-tune of the Whisper audio
branch on real CREMA-D clips (resumed once), and its ONNX export checked against torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emosdk.features.whisper import WhisperMelParams
from train.speech_data import (
    WINDOW,
    Augment,
    colored_noise,
    predict_window,
    spec_mask,
    synthetic_rir,
    train_window,
)
from train.speech_run import Config, load_branch
from train.train_speech import train
from train.whisper import WhisperBranchGraph


def test_windows_match_the_runtime():
    rng = np.random.default_rng(0)
    short = np.arange(1, 20_001, dtype=np.float32)
    w = predict_window(short)
    lead = (WINDOW - len(short)) // 2  # Recognizer.predict centres a short clip
    assert len(w) == WINDOW and w[lead] == 1 and w[lead + len(short) - 1] == 20_000
    assert not w[:lead].any() and not w[lead + len(short) :].any()
    long = np.ones(70_000, np.float32)
    assert len(predict_window(long)) == 70_000  # a longer clip is analysed whole
    for x in (short, long):
        t = train_window(x, rng)
        assert len(t) == WINDOW
    placed = train_window(short, rng)
    start = int(np.flatnonzero(placed)[0])
    np.testing.assert_array_equal(placed[start : start + len(short)], short)


def test_augment_is_bounded_and_changes_the_signal(shared_data):
    import soundfile as sf

    x, sr = sf.read(str(shared_data / "cremad" / "audio" / "1001_DFA_ANG_XX.opus"), dtype="float32")
    assert sr == 16_000
    rng = np.random.default_rng(1)
    every = Augment(p_speed=1, p_gain=1, p_noise=1, p_reverb=1, p_telephone=1, p_clip=1, p_babble=1)
    y = every(x, rng, babble_pool=[x[::-1].copy(), x * 0.5])
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert 0.85 * len(x) <= len(y) <= 1.15 * len(x)  # speed perturbation changes the length
    assert not np.allclose(y[: len(x) // 2], x[: len(x) // 2], atol=1e-3)
    assert abs(float(np.sqrt(np.mean(colored_noise(16_000, 1.0, rng) ** 2))) - 1.0) < 1e-3
    rir = synthetic_rir(0.5, rng)
    assert rir[0] == rir.max() and abs(float(np.sum(rir**2)) - 1.0) < 1e-4


def test_spec_mask_uses_the_silence_floor():
    rng = np.random.default_rng(2)
    mel = rng.standard_normal((300, 80)).astype(np.float32)
    out = spec_mask(mel, rng, time_masks=1, max_time=30, freq_masks=1, max_freq=10)
    changed = out != mel
    assert changed.any()
    np.testing.assert_allclose(out[changed], mel.max() - 2.0)


@pytest.mark.slow
def test_smoke_fine_tune_resumes_and_exports(tmp_path, shared_data):
    torch.set_num_threads(1)
    cfg = Config(
        out=tmp_path / "run",
        n_blocks=1,
        d_audio=32,
        batch=4,
        epochs=1,
        limit=16,
        max_steps=2,
        probe_epochs=2,
        save_every=1,
        cache_dir=tmp_path / "cache",
    )
    cfg.max_steps = 1  # stop after one step, as if interrupted ...
    first = train(cfg)
    assert (cfg.out / "last.pt").exists() and (cfg.out / "probe.pt").exists()
    (cfg.out / "result.json").unlink()  # ... then continue the same run to the end
    cfg.max_steps = 2
    res = train(cfg)
    log = [json.loads(line) for line in (cfg.out / "log.jsonl").read_text().splitlines()]
    assert [r["probe_epoch"] for r in log if "probe_epoch" in r] == [1, 2]  # not run twice
    assert [r["resumed_at"] for r in log if "resumed_at" in r] == [1]
    assert torch.load(cfg.out / "last.pt", weights_only=False)["step"] == 2
    assert first["test"]["n"] == res["test"]["n"] == 4
    assert 0.0 <= res["test"]["macro_f1"] <= 1.0
    assert len(res["layer_mix"]) == 2 and abs(sum(res["layer_mix"]) - 1) < 1e-5
    assert json.loads((cfg.out / "config.json").read_text())["n_blocks"] == 1

    from train.export_speech import export_graphs, int8_dynamic, session

    branch = load_branch(cfg.out)
    # one opset here (each dynamo export takes 10-40 s on 2 shared cores); both in the docs
    paths = export_graphs(branch, tmp_path / "onnx", opsets=(23,))  # validated against torch
    int8 = int8_dynamic(paths["opset23"], tmp_path / "onnx" / "int8.onnx")
    mel = np.random.default_rng(3).standard_normal((1, 301, 80)).astype(np.float32) * 0.3
    with torch.no_grad():
        ref = branch(torch.from_numpy(mel)).numpy()  # as trained: erf GELU
        ref_tanh = WhisperBranchGraph(branch, gelu="tanh")(torch.from_numpy(mel)).numpy()
    got = {}
    for p in (paths["opset23"], int8):
        got[p] = session(p).run(["audio_emb"], {"logmel": mel})[0]
        assert got[p].shape == ref.shape == (1, 75, 32)
    # the graph is the exported wrapper (tanh GELU by default), and that approximation moves
    # the embedding little
    np.testing.assert_allclose(got[paths["opset23"]], ref_tanh, atol=1e-3)
    np.testing.assert_allclose(got[paths["opset23"]], ref, atol=2e-2)
    # int8 (per channel, 7-bit range) stays close to float32: correlation of the embeddings
    corr = np.corrcoef(got[int8].ravel(), ref.ravel())[0, 1]
    assert corr > 0.98, corr
    assert WhisperMelParams().num_frames(WINDOW) // 4 == 75
