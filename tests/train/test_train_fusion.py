"""train.fusion_data (embeddings as the runtime computes them, augmentation, caches) and a
smoke-sized train.train_fusion run on the real corpora, resumed once."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from emosdk import Recognizer
from emosdk.capture.media import read_media
from emosdk.features.whisper import params_from_dict
from emosdk.models.bundle import StreamParams
from emosdk.quality import QualityRules, head_confidence
from emosdk.results import Modality
from emosdk.scores import softmax
from train import LABELS
from train import fusion_data as FD
from train.train_fusion import main

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "sdk" / "emosdk" / "models" / "bundled" / "default"
FIXTURE = REPO / "tests" / "data" / "fixture_bundle"
SAMPLES = REPO / "sdk" / "emosdk" / "samples"


def _graphs(bundle: Path):
    meta = json.loads((bundle / "model.json").read_text())
    ag = FD.AudioGraph(bundle / "audio_encoder.onnx", params_from_dict(meta["audio"]))
    return ag, FD.FaceGraph(bundle / "face_encoder.onnx"), FD.onnx_fusion(bundle / "fusion.onnx")


@pytest.fixture(scope="module")
def fer_face(shared_data: Path) -> np.ndarray:
    path = sorted((shared_data / "fer2013" / "PublicTest" / "happy").glob("*.jpg"))[0]
    return cv2.imread(str(path), cv2.IMREAD_COLOR)  # as emosdk-bench reads face images


@pytest.mark.parametrize("bundle", [DEFAULT, FIXTURE], ids=["default", "fixture"])
def test_embeddings_give_the_recognizers_scores(bundle: Path, fer_face: np.ndarray) -> None:
    """Our audio windows, face embeddings and measures through the bundle's fusion graph give
    exactly what Recognizer.predict gives (audio only, face only, both), for a short and a long
    clip."""
    ag, fg, fusion = _graphs(bundle)
    # the gate off: the raw fusion of what is present (the gate: the test below)
    rec = Recognizer(model=str(bundle), smoothing="none", num_threads=1, quality_gate=False)
    long = np.concatenate([read_media(SAMPLES / "1002_DFA_SAD_XX.mp3")[0]] * 2)  # > 3 s
    for pcm in (read_media(SAMPLES / "1002_DFA_ANG_XX.mp3")[0], long):
        w = FD.predict_window(pcm, 3.0)
        assert len(w[0]) == max(len(pcm), 48_000)
        ((seq, mask),) = FD.encode_windows(ag, [w])
        why, m = FD.AudioJudge()(*FD.fit_window(*w, ag.params, ag.frames_per_step))
        x, fm = fg.prepare(fer_face)
        emb = fg.encode(x[None])
        tv = int(round(len(w[0]) / 16_000 * 5))
        n_missing = ag.params.num_frames(48_000) // ag.frames_per_step
        cases = {
            "audio": (seq, mask, np.zeros((tv, fg.d)), np.zeros(tv)),
            "video": (np.zeros((n_missing, ag.d)), np.zeros(n_missing),
                      np.repeat(emb, 15, 0), np.ones(15)),
            "av": (seq, mask, np.repeat(emb, tv, 0), np.ones(tv)),
        }  # fmt: skip
        for kind, feeds in cases.items():
            kwargs = {}
            if kind in ("audio", "av"):
                kwargs.update(audio=pcm, sample_rate=16_000)
            if kind in ("video", "av"):
                kwargs["face"] = fer_face
            r = rec.predict(**kwargs)
            out = fusion(*(f[None] for f in feeds))
            ours = softmax(out["logits"][0])
            np.testing.assert_allclose(ours, [r.raw_scores[k] for k in rec.labels], atol=1e-5)
        assert why is None
        # the evidence measures: the auxiliary heads' top probability on the "av" fusion
        m["audio_confidence"] = head_confidence(out["logits_audio"][0])
        fm["face_confidence"] = head_confidence(out["logits_video"][0])
        assert 1 / len(rec.labels) < m["audio_confidence"] <= 1
        got = r.quality[Modality.AUDIO].measures
        assert set(m) == set(got)
        np.testing.assert_allclose([m[k] for k in got], list(got.values()), rtol=1e-5)
        got = r.quality[Modality.VIDEO].measures
        assert set(fm) == set(got)
        np.testing.assert_allclose([fm[k] for k in got], list(got.values()), rtol=1e-5)
    rec.close()


def test_predict_cases_judges_and_gates_as_the_runtime_does(
    tmp_path: Path, fer_face: np.ndarray
) -> None:
    """predict_cases with quality rules gives the Recognizer's labels, verdicts and modalities on
    a real clip and face: an audio-confidence threshold just above the voice's confidence marks
    the audio unreliable as ambiguous but keeps it in the fusion (the gate acts on signal
    measures); an SNR threshold no clip reaches gates the audio out (the face alone); neither
    leaves both in and reliable."""
    import shutil

    ag, fg, fusion = _graphs(DEFAULT)
    pcm = read_media(SAMPLES / "1002_DFA_ANG_XX.mp3")[0]
    w = FD.predict_window(pcm, 3.0)
    ((seq, mask),) = FD.encode_windows(ag, [w])
    why, m = FD.AudioJudge()(*FD.fit_window(*w, ag.params, ag.frames_per_step))
    x, fm = fg.prepare(fer_face)
    aset = FD.AudioSet(
        names=np.array(["clip"]), labels=np.array([0]), speakers=np.array(["1002"]), copies=1,
        n_clean=1, data=seq.astype(np.float16), masks=mask, offsets=np.array([0, len(seq)]),
        n_samples=np.array([[len(w[0])]]), kind=np.array([[-1]]), params=np.array([["{}"]]),
        missing=np.array([[why is not None]]), measure_names=tuple(m),
        measures=np.array([[list(m.values())]]),
    )  # fmt: skip
    fset = FD.FaceSet(
        emb=fg.encode(x[None])[None].astype(np.float16), labels=np.array([0]), n_jitter=0, k=0,
        kind=np.array([[-1]]), params=np.array([["{}"]]), measure_names=tuple(fm),
        measures=np.array([[list(fm.values())]]),
    )  # fmt: skip
    stream = StreamParams.from_dict(json.loads((DEFAULT / "model.json").read_text())["stream"])
    todo = [FD.Case(0, 0, 0, "clean", "av")]
    args = (aset, fset, np.array([0]), stream, ag.params, ag.frames_per_step, todo)
    conf = FD.predict_cases(fusion, *args)["audio_confidence"][0]
    # every rule off but the one under test (float16 embeddings: a little margin)
    off = {f: (1e9 if f.startswith("max") else -1e9) for f in QualityRules.__dataclass_fields__}
    for rule, used, reliable in (
        ({"min_audio_confidence": conf + 0.02}, 3, False),
        ({"min_snr_db": 200.0}, 2, True),
        ({"min_audio_confidence": conf - 0.02}, 3, True),
    ):
        th = {**off, **rule}
        res = FD.predict_cases(fusion, *args, rules=QualityRules(**th))
        dst = tmp_path / str(len(list(tmp_path.iterdir())))
        shutil.copytree(DEFAULT, dst)
        meta = json.loads((dst / "model.json").read_text())
        meta["quality"] = th
        (dst / "model.json").write_text(json.dumps(meta))
        with Recognizer(model=str(dst), smoothing="none", num_threads=1) as rec:
            r = rec.predict(audio=pcm, sample_rate=16_000, face=fer_face)
        assert res["used"][0] == used and res["reliable"][0] == int(reliable) == int(r.reliable)
        want = (Modality.AUDIO, Modality.VIDEO) if used == 3 else (Modality.VIDEO,)
        assert r.modalities == want
        if not reliable:
            assert "ambiguous" in r.quality[Modality.AUDIO].reason
        assert rec.labels[res["pred"][0]] == r.label
        got = [r.raw_scores[k] for k in rec.labels]
        np.testing.assert_allclose(res["probs"][0], got, atol=2e-3)


def test_frames_per_step_and_widths_are_read_from_the_graphs() -> None:
    for bundle in (DEFAULT, FIXTURE):
        meta = json.loads((bundle / "model.json").read_text())
        ag, fg, _ = _graphs(bundle)
        assert ag.frames_per_step == meta["stream"]["audio_frames_per_step"]
        assert ag.d == meta["graphs"]["audio_encoder"]["outputs"][0]["shape"][-1]
        assert fg.d == meta["graphs"]["face_encoder"]["outputs"][0]["shape"][-1]
        assert ag.input == "logmel" and ag.output == "audio_emb" and fg.input == "face"


def test_audio_corruptions_are_seeded_and_do_what_they_say() -> None:
    pcm = read_media(SAMPLES / "1002_DFA_HAP_XX.mp3")[0]
    talker = read_media(SAMPLES / "1002_DFA_NEU_XX.mp3")[0]
    for kind in FD.AUDIO_KINDS:
        y1, p1 = FD.corrupt_audio(pcm, kind, FD.aug_rng(1, "t", 0, 0), [talker])
        y2, p2 = FD.corrupt_audio(pcm, kind, FD.aug_rng(1, "t", 0, 0), [talker])
        np.testing.assert_array_equal(y1, y2)
        assert p1 == p2 and len(y1) == len(pcm) and np.abs(y1).max() <= 0.99 + 1e-6
        assert not np.allclose(y1, pcm)
        y3, _ = FD.corrupt_audio(pcm, kind, FD.aug_rng(2, "t", 0, 0), [talker])
        assert not np.array_equal(y1, y3)  # another seed, another draw
    y, p = FD.corrupt_audio(pcm, "telephone", FD.aug_rng(1, "t", 0, 1))
    spec = np.abs(np.fft.rfft(y.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(y), 1 / 16_000)
    assert spec[f > p["high_hz"] + 200].sum() < 1e-3 * spec.sum()  # nothing above the band
    y, p = FD.corrupt_audio(pcm, "white_noise", FD.aug_rng(1, "t", 0, 2))
    gain = float(y @ pcm) / float(pcm @ pcm)  # fit_full_scale may have scaled the mixture
    noise = y - gain * pcm
    snr = 10 * np.log10(float((gain * pcm) @ (gain * pcm)) / float(noise @ noise))
    assert abs(snr - p["snr_db"]) < 1.0
    _, p = FD.corrupt_audio(pcm, "babble", FD.aug_rng(1, "t", 0, 3), [])
    assert p["fallback"] == "pink_noise"  # no other speaker at hand: said so


def test_face_corruptions_are_seeded_and_do_what_they_say(fer_face: np.ndarray) -> None:
    fg = FD.FaceGraph(DEFAULT / "face_encoder.onnx")
    clean = fg.prepare(fer_face)[1]
    for kind in FD.FACE_KINDS:
        a, pa = FD.corrupt_face(fer_face, kind, FD.aug_rng(1, "f", 0, 0))
        b, pb = FD.corrupt_face(fer_face, kind, FD.aug_rng(1, "f", 0, 0))
        np.testing.assert_array_equal(a, b)
        assert pa == pb and a.dtype == np.uint8 and a.flags.c_contiguous
        assert a.shape != fer_face.shape or not np.array_equal(a, fer_face)
    a, p = FD.corrupt_face(fer_face, "low_res", FD.aug_rng(1, "f", 0, 1))
    assert a.shape[:2] == (p["face_px"], p["face_px"])
    assert fg.prepare(a)[1]["face_px"] == p["face_px"]  # face_px reads the small crop
    a, _ = FD.corrupt_face(fer_face, "darken", FD.aug_rng(1, "f", 0, 2))
    assert fg.prepare(a)[1]["brightness"] < clean["brightness"]
    j = FD.jitter_face(fer_face, FD.aug_rng(1, "f", 0, 3))
    assert j.shape == fer_face.shape and not np.array_equal(j, fer_face)


def test_items_keep_the_test_speakers_out(shared_data: Path) -> None:
    parts = FD.split_items(1, shared_data)
    test_spk = {it.speaker for it in parts["test"]}
    dev_spk = {it.speaker for it in parts["dev"]}
    assert len(test_spk) == 14 and len(parts["test"]) == 899
    assert not test_spk & {it.speaker for it in parts["final"]}
    assert not (test_spk | dev_spk) & {it.speaker for it in parts["select"]}
    extras = [it for it in parts["final"] if it.source == "summary"]
    assert len(extras) == 1044  # clips of non-Test speakers with a single summaryTable vote
    assert {it.source for it in parts["final"]} == {"Train", "Development", "summary"}
    assert all(0 <= it.label < len(LABELS) for it in parts["final"])
    held = FD.calib_split(np.repeat(np.arange(6), 100), 120, 0)
    assert held.sum() == 120 and all(held[i * 100 : (i + 1) * 100].sum() == 20 for i in range(6))


def test_smoke_training_resumes(tmp_path: Path) -> None:
    """A smoke-sized run on the fixture encoders (widths 16): embeddings, both fits, the
    summary; the same command again loads the finished fits and gives the same figures."""
    argv = [
        "--out", str(tmp_path / "run"),
        "--cache-dir", str(tmp_path / "cache"),
        "--audio-encoder", str(FIXTURE / "audio_encoder.onnx"),
        "--audio-frontend", str(FIXTURE / "model.json"),
        "--face-encoder", str(FIXTURE / "face_encoder.onnx"),
        "--limit", "8", "--max-steps", "4", "--epochs", "2", "--batch", "8",
        "--eval-k", "2", "--audio-k", "2", "--face-k", "2",
    ]  # fmt: skip
    s1 = main(argv)
    assert (tmp_path / "run" / "final" / "fusion.pt").is_file()
    assert s1["fusion"]["kwargs"]["d_audio"] == 16 and s1["stream"]["audio_frames_per_step"] == 4
    assert "SYNTHETIC PAIRS" in s1["note"] and "SYNTHETIC PAIRS" in s1["data_card"]["pairing"]
    m = s1["metrics"]["test_final"]
    for key in ("av/clean", "av/both_corrupted", "audio_only/corrupted", "video_only/clean"):
        assert 0.0 <= m[key]["macro_f1"] <= 1.0 and m[key]["n"] > 0
    assert m["audio_only/corrupted"]["n"] == 2 * m["audio_only/clean"]["n"]
    assert any(k.startswith("audio_kind/") for k in m)
    assert 1 <= s1["selected_epoch"] <= 2
    caches = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert any(c.startswith("audio_train_") for c in caches)
    assert any(c.startswith("face_fer_train_") for c in caches)
    s2 = main(argv)
    assert s2["headline"] == s1["headline"]


def test_cached_sets_are_reused_and_keyed(tmp_path: Path, shared_data: Path) -> None:
    ag, fg, _ = _graphs(FIXTURE)
    items = FD.split_items(1, shared_data, limit=3)["test"]
    store = FD.PcmStore(None, shared_data)
    stream = StreamParams(audio_frames_per_step=ag.frames_per_step)
    kw = {"mode": "predict", "n_clean": 1, "k": 2, "shard": 2}
    a = FD.audio_set(tmp_path, "t", items, store, ag, stream, seed=5, **kw)
    assert a.copies == 3 and len(a.names) == 3 and (a.kind[:, 0] == -1).all()
    assert len(list(Path(a.meta["folder"]).glob("shard_*.npz"))) == 2
    b = FD.audio_set(tmp_path, "t", items, store, ag, stream, seed=5, **kw)
    np.testing.assert_array_equal(a.data, b.data)
    c = FD.audio_set(tmp_path, "t", items, store, ag, stream, seed=6, **kw)
    assert c.meta["folder"] != a.meta["folder"]  # another augmentation seed, another cache
    np.testing.assert_array_equal(c.window(0, 0)[0], a.window(0, 0)[0])  # clean copies agree
    assert not np.array_equal(c.window(0, 1)[0], a.window(0, 1)[0])


def test_audio_teacher_gives_the_recognizers_audio_only_scores_and_pulls_the_student() -> None:
    """--audio-teacher: the teacher is the earlier fusion graph run as the runtime runs it without
    a face (its scores on a real clip are Recognizer.predict's, audio only); the distillation
    term ignores windows without audio, pulls the audio-only heads toward the teacher, and an
    encoder of another width is refused."""
    import torch

    from train.models import AuxFormerDeploy
    from train.train_fusion import Config, audio_kd_loss, audio_teacher

    ag, _, _ = _graphs(DEFAULT)
    teach = audio_teacher(Config(audio_teacher=str(DEFAULT / "fusion.onnx")), ag.d, 15)
    pcm = read_media(SAMPLES / "1002_DFA_ANG_XX.mp3")[0]
    ((seq, mask),) = FD.encode_windows(ag, [FD.predict_window(pcm, 3.0)])
    a = np.stack([seq * mask[:, None], np.zeros_like(seq)]).astype(np.float32)
    am = np.stack([mask, np.zeros_like(mask)]).astype(np.float32)
    t = teach(a, am)
    with Recognizer(model=str(DEFAULT), smoothing="none", num_threads=1, quality_gate=False) as rec:
        r = rec.predict(audio=pcm, sample_rate=16_000)
        np.testing.assert_allclose(softmax(t[0]), [r.raw_scores[k] for k in rec.labels], atol=1e-5)
    assert (t[1] == 0).all()  # no audio: no target

    torch.manual_seed(0)
    student = AuxFormerDeploy(d_audio=ag.d, d_video=8, n_classes=len(LABELS), d_model=16,
                              n_heads=1, n_cross=1, n_mem=1)  # fmt: skip
    x = [torch.from_numpy(a), torch.from_numpy(am), torch.zeros(2, 15, 8), torch.zeros(2, 15)]
    x[3][1] = 1.0  # the second window: face only
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = audio_kd_loss(student(*x), t, x[1], x[3], 2.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0]
    with torch.no_grad():
        out = student(*x)
        for head in (out[1], out[2]):  # main (video masked) and audio auxiliary heads
            assert head[0].argmax() == int(np.argmax(t[0]))
        moved = [o.clone() for o in out]
        moved[1][1] += 100.0 * torch.eye(len(LABELS))[0]  # the face-only window's heads only
        moved[2][1] -= 100.0 * torch.eye(len(LABELS))[0]
    assert float(audio_kd_loss(moved, t, x[1], x[3], 2.0)) == pytest.approx(
        float(audio_kd_loss(out, t, x[1], x[3], 2.0)), rel=1e-6
    )
    with pytest.raises(SystemExit, match="audio width"):
        audio_teacher(Config(audio_teacher=str(DEFAULT / "fusion.onnx")), 16, 15)
