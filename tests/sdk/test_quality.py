"""Quality in every result: measures of each present modality on the real clips, clean and
degraded, the verdict against the bundle's thresholds, and the gate that leaves an unreliable
modality out of the fusion when the other one is reliable."""

import json
import shutil

import cv2
import numpy as np
import pytest

from emosdk import Modality, Recognizer
from emosdk.quality import QualityRules, audio_measures, face_measures

AV = (Modality.AUDIO, Modality.VIDEO)


@pytest.fixture(scope="module")
def clip(decoded_clips):
    _, audio, frames = decoded_clips[3]  # happy: speech from 0.1 s on
    return audio, [f for _, f in frames[::6]]


def noisy(audio, snr_db, seed=0):
    noise = np.random.default_rng(seed).standard_normal(len(audio)).astype(np.float32)
    speech_power = np.mean(audio[np.abs(audio) > 0.01] ** 2)
    noise *= np.sqrt(speech_power / 10 ** (snr_db / 10))
    return np.clip(audio + noise, -1, 1).astype(np.float32)


def test_the_clean_clip_is_reliable_with_plausible_measures(fixture_bundle, clip):
    audio, frames = clip
    with Recognizer(model=fixture_bundle) as rec:
        r = rec.predict(audio=audio, frame=frames)
    assert r.modalities == AV and r.reliable
    a, v = r.quality[Modality.AUDIO].measures, r.quality[Modality.VIDEO].measures
    assert a["snr_db"] > 15 and -40 < a["level_dbfs"] < -10 and a["clipping"] < 1e-3
    assert 0.2 < a["speech_fraction"] <= 1 and -40 < a["hf_db"] < -5
    assert 100 < v["face_px"] < 250 and 0.3 < v["brightness"] < 0.8 and v["sharpness"] > 0.04
    d = json.loads(r.to_json())
    assert d["reliable"] is True and d["quality"]["audio"]["reliable"] is True


def test_noise_makes_audio_unreliable_and_the_gate_fuses_the_face_alone(fixture_bundle, clip):
    audio, frames = clip
    with Recognizer(model=fixture_bundle) as rec:
        r = rec.predict(audio=noisy(audio, -5), frame=frames)
        alone = rec.predict(frame=frames)
    q = r.quality[Modality.AUDIO]
    assert not q.reliable and q.reason.startswith("SNR") and q.measures["snr_db"] < 3
    assert r.modalities == (Modality.VIDEO,) and r.reliable
    assert r.missing[Modality.AUDIO] == f"unreliable: {q.reason}"
    assert r.raw_scores == pytest.approx(dict(alone.raw_scores))
    with Recognizer(model=fixture_bundle, quality_gate=False) as rec:
        kept = rec.predict(audio=noisy(audio, -5), frame=frames)
    assert kept.modalities == AV and not kept.reliable
    with Recognizer(model=fixture_bundle) as rec:
        only = rec.predict(audio=noisy(audio, -5))  # nothing better: it stays, marked unreliable
    assert only.modalities == (Modality.AUDIO,) and not only.reliable


def test_small_dark_and_blurred_faces_are_unreliable(fixture_bundle, clip):
    audio, frames = clip
    small = [cv2.resize(f, (128, 96), interpolation=cv2.INTER_AREA) for f in frames]
    rng = np.random.default_rng(0)
    grainy = [
        np.clip(f + rng.normal(0, 70, f.shape), 0, 255).astype(np.uint8)
        for f in (cv2.resize(f, (160, 120), interpolation=cv2.INTER_AREA) for f in frames)
    ]
    dark = [(f * 0.12).astype(np.uint8) for f in frames]
    blurred = [cv2.blur(f, (15, 15)) for f in frames]
    with Recognizer(model=fixture_bundle) as rec:  # BlazeFace: finds 28 px faces
        reasons = {}
        for name, imgs in (
            ("small", small),
            ("dark", dark),
            ("blurred", blurred),
            ("grainy", grainy),
        ):
            r = rec.predict(audio=audio, frame=imgs)
            if Modality.VIDEO in r.quality:
                reasons[name] = r.quality[Modality.VIDEO].reason
            elif Modality.VIDEO in r.missing:
                reasons[name] = r.missing[Modality.VIDEO]
    assert "face" in reasons["small"] and "px" in reasons["small"]
    assert reasons["dark"] is not None
    assert "sharpness" in reasons["blurred"]
    assert "noise" in reasons["grainy"]


def test_measures_of_pure_signals():
    sr = 16000
    t = np.arange(sr * 2) / sr
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    valid = np.ones(len(tone), bool)
    speech = np.zeros(len(tone) // 480, bool)
    speech[: len(speech) // 2] = True
    quiet = tone.copy()
    quiet[len(quiet) // 2 :] *= 0.01  # the "non-speech" half 40 dB down
    m = audio_measures(quiet, valid, speech, sr)
    assert m["snr_db"] == pytest.approx(40 - 9.8, abs=2)  # one band; the floor bias corrected
    assert m["level_dbfs"] == pytest.approx(10 * np.log10(0.3**2 / 2), abs=0.2)
    assert m["hf_db"] < -60 and m["speech_fraction"] == pytest.approx(0.5, abs=0.02)
    clipped = np.clip(tone * 10, -1, 1) * 0.5  # clipped, then turned down: flat at its peak
    assert audio_measures(clipped, valid, speech, sr)["clipping"] > 0.3
    assert audio_measures(tone, valid, speech, sr)["clipping"] < 0.01  # a sine: 0.9 %
    flat = face_measures(np.full((48, 48), 0.5), 48)
    assert flat["sharpness"] == 0 and flat["contrast"] == 0 and flat["noise"] == 0
    grain = np.random.default_rng(0).normal(0.5, 0.05, (48, 48))
    assert face_measures(grain, 48)["noise"] == pytest.approx(0.05, rel=0.1)  # Immerkaer


def test_a_bundle_sets_its_own_thresholds(fixture_bundle, clip, tmp_path):
    audio, frames = clip
    dst = tmp_path / "bundle"
    shutil.copytree(fixture_bundle, dst)
    meta = json.loads((dst / "model.json").read_text())
    meta["quality"] = {"min_snr_db": 60.0}
    (dst / "model.json").write_text(json.dumps(meta))
    with Recognizer(model=dst) as rec:
        assert rec.bundle.quality == QualityRules(min_snr_db=60.0)
        r = rec.predict(audio=audio, frame=frames)
    assert r.modalities == (Modality.VIDEO,) and "SNR" in r.missing[Modality.AUDIO]


def test_each_modality_reports_its_own_heads_confidence_and_an_ambiguous_voice_is_flagged(
    fixture_bundle, clip, tmp_path
):
    """audio_confidence / face_confidence are the top probability of the fusion's unimodal heads
    (in (1/C, 1]); a bundle threshold above the voice's confidence marks clean audio unreliable
    as ambiguous, and (the gate acting on signal measures only) the voice stays in the fusion."""
    audio, frames = clip
    with Recognizer(model=fixture_bundle) as rec:
        r = rec.predict(audio=audio, frame=frames)
    n = len(r.scores)
    conf = r.quality[Modality.AUDIO].measures["audio_confidence"]
    assert 1 / n < conf <= 1 and 1 / n < r.quality[Modality.VIDEO].measures["face_confidence"] <= 1
    assert "audio_confidence" in json.loads(r.to_json())["quality"]["audio"]["measures"]
    dst = tmp_path / "bundle"
    shutil.copytree(fixture_bundle, dst)
    meta = json.loads((dst / "model.json").read_text())
    meta["quality"] = {"min_audio_confidence": conf + 0.01}
    (dst / "model.json").write_text(json.dumps(meta))
    with Recognizer(model=dst) as rec:
        flagged = rec.predict(audio=audio, frame=frames)
    q = flagged.quality[Modality.AUDIO]
    assert not q.reliable and "ambiguous" in q.reason and "signal measures look clean" in q.reason
    assert flagged.modalities == AV and not flagged.reliable
    assert flagged.raw_scores == pytest.approx(dict(r.raw_scores))
