"""mediapipe's BlazeFace detector on the real CREMA-D frames, and the ``face_detector`` option.

The detection tests need mediapipe 0.10.x (``pip install "emosdk[mediapipe]"``) and are skipped,
with the reason, where it is not importable; with ``EMOSDK_REQUIRE_MEDIAPIPE=1`` (CI's mediapipe
venv) they fail instead. The option tests at the end run everywhere: they hide mediapipe by
putting ``None`` (or a fake 1.x module) in ``sys.modules``.
"""

import logging
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from emosdk import Modality, Recognizer, RecognizerConfig
from emosdk.capture import ArraySource
from emosdk.errors import BackendError, BackendUnavailableError, ConfigError
from emosdk.perception.face import (
    HaarFaceDetector,
    MediaPipeFaceDetector,
    align,
    create_face_detector,
    mediapipe_unavailable_reason,
)

REQUIRED = os.environ.get("EMOSDK_REQUIRE_MEDIAPIPE") == "1"
UNAVAILABLE = mediapipe_unavailable_reason()


@pytest.fixture(scope="module")
def mp_detector():
    if UNAVAILABLE is not None:
        if REQUIRED:
            pytest.fail(f"EMOSDK_REQUIRE_MEDIAPIPE=1 but mediapipe cannot run: {UNAVAILABLE}")
        pytest.skip(UNAVAILABLE)
    with MediaPipeFaceDetector() as det:
        yield det


@pytest.fixture(scope="module")
def haar():
    return HaarFaceDetector()


def sampled(decoded_clips, step=5):
    return [(p.name, f) for p, _, frames in decoded_clips for _, f in frames[::step]]


def test_mediapipe_is_present_when_required():
    if REQUIRED:
        assert UNAVAILABLE is None, UNAVAILABLE


# -- real detection (mediapipe 0.10.x) -------------------------------------------------------


def test_one_face_with_eyes_in_every_sampled_frame(mp_detector, decoded_clips):
    frames = sampled(decoded_clips)
    assert len(frames) >= 60
    for name, f in frames:
        h, w = f.shape[:2]
        boxes = mp_detector.detect(f)
        assert len(boxes) == 1, name
        b = boxes[0]
        assert 0 <= b.x and 0 <= b.y and b.x + b.w <= w and b.y + b.h <= h, (name, b)
        assert 0.5 < b.score <= 1.0
        assert b.left_eye is not None and b.right_eye is not None, name
        assert b.x < b.left_eye[0] < b.right_eye[0] < b.x + b.w, (name, b)
        assert b.y < b.left_eye[1] < b.y + b.h / 2 and b.y < b.right_eye[1] < b.y + b.h / 2


def test_agrees_with_haar(mp_detector, haar, decoded_clips):
    # measured on every frame of the six clips: IoU 0.52 to 0.68, mean 0.62 (BlazeFace's
    # short-range box is tighter, without the forehead); eye centres within 0.094 face widths
    ious, eye_err = [], []
    for name, f in sampled(decoded_clips):
        m, h = mp_detector.detect(f)[0], haar.detect(f)[0]
        ious.append(m.iou(h))
        assert ious[-1] > 0.45, (name, m, h)
        if h.left_eye is not None:
            err = max(
                np.hypot(*np.subtract(m.left_eye, h.left_eye)),
                np.hypot(*np.subtract(m.right_eye, h.right_eye)),
            )
            eye_err.append(err / h.w)
    assert np.mean(ious) > 0.55
    assert len(eye_err) >= 30 and max(eye_err) < 0.12


def test_color_order_grey_and_float_frames(mp_detector, decoded_clips):
    import cv2

    _, _, frames = decoded_clips[2]
    bgr = frames[15][1]
    ref = mp_detector.detect(bgr)[0]
    with MediaPipeFaceDetector(color_order="rgb") as rgb_det:
        same = rgb_det.detect(np.ascontiguousarray(bgr[..., ::-1]))[0]
        swapped = rgb_det.detect(bgr)  # BGR read as RGB: still a face, with a lower score
    assert same.iou(ref) > 0.98 and abs(same.score - ref.score) < 1e-3
    assert not swapped or swapped[0].score < ref.score
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    for img in (grey, grey[..., None], bgr.astype(np.float32) / 255):
        boxes = mp_detector.detect(img)
        assert boxes and boxes[0].iou(ref) > 0.8


def test_box_cut_by_the_frame_is_clipped(mp_detector, decoded_clips):
    _, _, frames = decoded_clips[0]
    f = frames[20][1]
    full = mp_detector.detect(f)[0]
    cut = np.ascontiguousarray(f[full.y + int(full.h * 0.3) :])  # the top of the face is gone
    boxes = mp_detector.detect(cut)
    assert boxes, "a face missing its top 30 % is still found"
    b = boxes[0]
    assert b.y == 0 and b.h < full.h and 0 <= b.x and b.x + b.w <= cut.shape[1]
    for eye in (b.left_eye, b.right_eye):
        assert eye is None or (0 <= eye[0] < cut.shape[1] and 0 <= eye[1] < cut.shape[0])


def test_alignment_with_mediapipe_eyes(mp_detector, decoded_clips):
    import cv2

    _, _, frames = decoded_clips[4]
    frame = frames[20][1]
    h, w = frame.shape[:2]
    tilted = cv2.warpAffine(frame, cv2.getRotationMatrix2D((w / 2, h / 2), 12, 1.0), (w, h))
    b = mp_detector.detect(tilted)[0]
    tilt = np.degrees(np.arctan2(b.right_eye[1] - b.left_eye[1], b.right_eye[0] - b.left_eye[0]))
    assert abs(tilt) > 6
    level = mp_detector.detect(align(tilted, b))[0]
    new_tilt = np.degrees(
        np.arctan2(level.right_eye[1] - level.left_eye[1], level.right_eye[0] - level.left_eye[0])
    )
    assert abs(new_tilt) < abs(tilt) / 3


def test_black_frame_has_no_face(mp_detector):
    assert mp_detector.detect(np.zeros((360, 480, 3), np.uint8)) == []
    assert mp_detector.detect(np.zeros((360, 480), np.uint8)) == []


def test_full_range_model_and_close(mp_detector, decoded_clips):
    _, _, frames = decoded_clips[1]
    f = frames[10][1]
    det = MediaPipeFaceDetector(model_selection=1, min_detection_confidence=0.6)
    assert "full-range" in det.name
    b = det.detect(f)[0]
    assert b.iou(mp_detector.detect(f)[0]) > 0.5
    det.close()
    det.close()  # twice is fine
    with pytest.raises(BackendError, match="closed"):
        det.detect(f)
    with pytest.raises(ValueError, match="model_selection"):
        MediaPipeFaceDetector(model_selection=2)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_dropped_detectors_release_their_threads(mp_detector):
    import gc

    def threads():
        return len(os.listdir("/proc/self/task"))

    img = np.zeros((120, 160, 3), np.uint8)
    before = threads()
    for _ in range(8):
        det = MediaPipeFaceDetector()
        det.detect(img)
        del det  # never closed: __del__ closes the graph, whose threads keep it alive otherwise
        gc.collect()
    assert threads() <= before + 2


def test_recognizer_streams_a_clip_with_mediapipe(
    mp_detector, fixture_bundle, decoded_clips, caplog
):
    _, audio, frames = decoded_clips[3]
    src = ArraySource(audio=audio, sample_rate=16000, frames=[f for _, f in frames], fps=29.97)
    with caplog.at_level(logging.INFO, logger="emosdk"):
        with Recognizer(model=fixture_bundle, face_detector="mediapipe") as rec:
            results = list(rec.stream(source=src))
    assert len(results) >= 3
    assert all(Modality.VIDEO in r.modalities for r in results), [r.reason for r in results]
    assert "face detector: mediapipe" in caplog.text and "BlazeFace" in caplog.text


def test_auto_picks_mediapipe_without_the_onnx_detector(mp_detector, caplog, tmp_path):
    with caplog.at_level(logging.INFO, logger="emosdk"):
        det = create_face_detector("auto", models=tmp_path)  # no face_detector.onnx there
    assert isinstance(det, MediaPipeFaceDetector)
    assert "auto: mediapipe is installed" in caplog.text
    det.close()


def test_onnx_pipeline_matches_mediapipes_face_landmarker(mp_detector, decoded_clips):
    """The ONNX Runtime pipeline (BlazeFace -> rotated region -> landmarks -> blendshapes) against
    mediapipe's own FaceLandmarker (Tasks API) running the same .task file."""
    from mediapipe.tasks.python import BaseOptions, vision

    from emosdk.perception import BlazeFaceDetector, FaceLandmarker
    from emosdk.perception.face import DEFAULT_MODELS

    task = Path(__file__).parents[2].parent / "shared" / "models" / "face_landmarker.task"
    if not task.is_file():
        pytest.fail(f"{task} is missing: the shared models must sit beside the checkout")
    import mediapipe as mp

    det = BlazeFaceDetector(DEFAULT_MODELS / "face_detector.onnx")
    lmk = FaceLandmarker(
        DEFAULT_MODELS / "face_landmarks.onnx", DEFAULT_MODELS / "face_blendshapes.onnx"
    )
    opts = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(task)),
        output_face_blendshapes=True,
        running_mode=vision.RunningMode.IMAGE,
    )
    lm_err, bs_err = [], []
    with vision.FaceLandmarker.create_from_options(opts) as ref:
        for _, f in sampled(decoded_clips, step=15):
            h, w = f.shape[:2]
            rgb = np.ascontiguousarray(f[..., ::-1])
            res = ref.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
            assert len(res.face_landmarks) == 1
            want = np.array([[p.x * w, p.y * h] for p in res.face_landmarks[0]], np.float32)
            want_bs = np.array([c.score for c in res.face_blendshapes[0]], np.float32)
            got = lmk.refine(f, det.detect(f)[0])
            iod = np.linalg.norm(want[33] - want[263])
            lm_err.append(np.abs(got.landmarks[:, :2] - want).max() / iod)
            bs_err.append(np.abs(got.blendshapes - want_bs).max())
    # measured (mediapipe 0.10.21): over 51 frames of CREMA-D, CK+ and FER2013, landmarks within
    # 0.11 % of the eye-corner distance at the median, 1.6 % at most; the largest blendshape
    # difference per frame 0.0075 at the median, 0.12 at most (0.023 at the median on these
    # CREMA-D frames alone). The residue is OpenCV's fixed-point warp in mediapipe vs the
    # float bilinear sampling here.
    assert len(lm_err) >= 20
    assert np.median(lm_err) < 0.005 and max(lm_err) < 0.03
    assert np.median(bs_err) < 0.05 and max(bs_err) < 0.2


# -- the option, everywhere (mediapipe hidden) ----------------------------------------------


@pytest.fixture
def no_mediapipe(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # `import mediapipe` raises ImportError


def test_mediapipe_requested_without_it_says_how_to_install(no_mediapipe):
    with pytest.raises(BackendUnavailableError, match=r"0\.10\.21 on x86-64") as e:
        create_face_detector("mediapipe")
    assert 'pip install "emosdk[mediapipe]"' in str(e.value) and "0.10.18" in str(e.value)
    with pytest.raises(BackendUnavailableError, match=r"emosdk\[mediapipe\]"):
        MediaPipeFaceDetector()


def test_mediapipe_1x_without_solutions_is_refused(monkeypatch):
    fake = types.ModuleType("mediapipe")
    fake.__version__ = "1.2.2"  # the 1.x wheels have mediapipe.tasks but no solutions
    monkeypatch.setitem(sys.modules, "mediapipe", fake)
    with pytest.raises(BackendUnavailableError, match=r"1\.2\.2 has no mp\.solutions") as e:
        create_face_detector("mediapipe")
    assert "1.x ships no face models" in str(e.value) and "emosdk[mediapipe]" in str(e.value)
    assert "1.x ships no face models" in mediapipe_unavailable_reason()


def test_auto_falls_back_to_haar_and_says_why(no_mediapipe, caplog, tmp_path):
    with caplog.at_level(logging.INFO, logger="emosdk"):
        det = create_face_detector("auto", models=tmp_path)  # no face_detector.onnx there
    assert isinstance(det, HaarFaceDetector)
    assert "Haar cascade (auto: no " in caplog.text and "mediapipe is not importable" in caplog.text
    assert create_face_detector("haar").name.endswith("Haar cascade")


def test_auto_without_any_detector_names_every_way_out(no_mediapipe, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(
        BackendUnavailableError, match=r"emosdk\[capture\].*emosdk\[mediapipe\].*face_detector.onnx"
    ):
        create_face_detector("auto", models=tmp_path)


def test_recognizer_without_mediapipe(no_mediapipe, fixture_bundle, decoded_clips, caplog):
    _, audio, frames = decoded_clips[0]
    images = [f for _, f in frames[:45]]
    with Recognizer(model=fixture_bundle, face_detector="mediapipe") as rec:
        with pytest.raises(BackendUnavailableError, match=r"emosdk\[mediapipe\]"):
            rec.predict(audio=audio[:24000], frame=images[::6])
        # a stream goes on with audio only and says why video is missing
        src = ArraySource(audio=audio[:24000], sample_rate=16000, frames=images, fps=29.97)
        results = list(rec.stream(source=src))
    assert results and all(Modality.VIDEO not in r.modalities for r in results)
    assert all("emosdk[mediapipe]" in r.missing[Modality.VIDEO] for r in results)
    with caplog.at_level(logging.INFO, logger="emosdk"):
        with Recognizer(model=fixture_bundle) as rec:  # "auto"
            r = rec.predict(audio=audio[:24000], frame=images[::6])
    assert Modality.VIDEO in r.modalities
    assert "BlazeFace short-range (ONNX Runtime) (auto:" in caplog.text


def test_bad_face_detector_value_is_a_config_error():
    assert RecognizerConfig().face_detector == "auto"
    with pytest.raises(ConfigError, match=r"face_detector: expected one of .*'mediapipe'.*'dlib'"):
        RecognizerConfig(face_detector="dlib")
    with pytest.raises(ConfigError, match="face_detector"):
        RecognizerConfig().replace(face_detector=None)
    with pytest.raises(ValueError, match="face_detector"):
        create_face_detector("MediaPipe")
