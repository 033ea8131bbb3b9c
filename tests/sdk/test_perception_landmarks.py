"""MediaPipe's 478 landmarks, presence and 52 blendshapes on ONNX Runtime, and the per-stream
tracker, on real frames (CREMA-D clips, CK+ faces), against the stored TFLite reference."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from perception_reference import pad_face, reference_frames  # tests/sdk/perception_reference.py

from emosdk.errors import BackendError, ConfigError, InputError, ModelError
from emosdk.perception import (
    BLENDSHAPE_NAMES,
    BlazeFaceDetector,
    FaceLandmarker,
    FaceMeshTracker,
)
from emosdk.perception.blazeface import to_face_box
from emosdk.perception.face import DEFAULT_MODELS
from emosdk.perception.landmarks import (
    BLENDSHAPE_LANDMARKS,
    roi_from_keypoints,
    roi_from_landmarks,
)

SMILE = [BLENDSHAPE_NAMES.index("mouthSmileLeft"), BLENDSHAPE_NAMES.index("mouthSmileRight")]


@pytest.fixture(scope="module")
def det():
    return BlazeFaceDetector(DEFAULT_MODELS / "face_detector.onnx")


@pytest.fixture(scope="module")
def lmk():
    return FaceLandmarker(
        DEFAULT_MODELS / "face_landmarks.onnx", DEFAULT_MODELS / "face_blendshapes.onnx"
    )


def clip(decoded_clips, code):
    return next([f for _, f in fr] for p, _, fr in decoded_clips if f"_{code}_" in p.name)


def test_tables_match_mediapipe():
    assert len(BLENDSHAPE_NAMES) == 52 and BLENDSHAPE_NAMES[0] == "_neutral"
    assert len(BLENDSHAPE_LANDMARKS) == 146 and len(set(BLENDSHAPE_LANDMARKS.tolist())) == 146
    assert BLENDSHAPE_LANDMARKS.max() == 477  # the ten iris points close the subset


def test_matches_the_tflite_reference_on_real_frames(lmk, decoded_clips, shared_data):
    # measured against LiteRT: landmarks within 3e-4 px, presence 1e-5, blendshapes 2e-5
    n = 0
    for fid, frame, ref in reference_frames(decoded_clips, shared_data):
        if int(ref["n_faces"]) == 0:
            continue
        roi = roi_from_keypoints(tuple(ref["box"]), ref["keypoints"])
        np.testing.assert_allclose(
            [roi.cx, roi.cy, roi.width, roi.height, roi.rotation], ref["roi"], atol=1e-3
        )
        mesh = lmk.mesh(frame, [roi])[0]
        np.testing.assert_allclose(mesh.landmarks, ref["landmarks"], atol=0.02, err_msg=fid)
        assert abs(mesh.presence - float(ref["presence"])) < 1e-3, fid
        bs = lmk.blendshapes(mesh.landmarks)
        np.testing.assert_allclose(bs, ref["blendshapes"], atol=1e-3, err_msg=fid)
        n += 1
    assert n >= 30


def test_smile_separates_happy_from_neutral(det, lmk, decoded_clips):
    # measured on every frame: happy 0.62 / 0.63 (left / right), neutral 0.18 / 0.13
    means = {}
    for code in ("HAP", "NEU"):
        tracker = FaceMeshTracker(det, lmk)
        bs = np.array([tracker.detect(f)[0].blendshapes for f in clip(decoded_clips, code)])
        assert bs.shape[1] == 52 and bs.min() >= 0 and bs.max() <= 1
        means[code] = bs[:, SMILE].mean()
    assert means["HAP"] > 0.5 > 0.25 > means["NEU"]


def test_ckplus_blendshapes_follow_the_expression(det, lmk, shared_data):
    import csv

    import cv2

    with open(shared_data / "ckplus48" / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    got = {}
    for label in ("happiness", "sadness", "surprise"):
        vals = []
        for r in [r for r in rows if r["label"] == label][:12]:
            frame = pad_face(cv2.imread(str(shared_data / "ckplus48" / r["file"]), 0))
            vals.append(lmk.refine(frame, det.detect(frame)[0]).blendshapes)
        got[label] = np.array(vals)
    # measured on 30 each: smile happy 0.87, sad 0.00; jawOpen surprise 0.51, others < 0.03
    jaw = BLENDSHAPE_NAMES.index("jawOpen")
    assert got["happiness"][:, SMILE].mean() > 0.6 > 0.1 > got["sadness"][:, SMILE].mean()
    assert got["surprise"][:, jaw].mean() > 0.3 > got["happiness"][:, jaw].mean()


def test_tracker_runs_the_detector_once_per_clip(det, lmk, decoded_clips):
    frames = clip(decoded_clips, "ANG")
    tracker = FaceMeshTracker(det, lmk, blendshapes=False)
    boxes = [tracker.detect(f) for f in frames]
    assert all(len(b) == 1 for b in boxes)
    assert tracker.detector_runs == 1  # the landmarks carried the face through the clip
    for (b,) in boxes[::10]:
        assert b.track_id == 0 and b.presence > 0.9 and b.blendshapes is None
        assert b.landmarks.shape == (478, 3)
        assert b.x < b.left_eye[0] < b.right_eye[0] < b.x + b.w  # iris centres
        assert b.y < b.left_eye[1] < b.y + b.h / 2
        assert b.keypoints is None
    # tracking does not drift from a fresh detection's landmarks
    last = frames[-1]
    fresh = lmk.refine(last, det.detect(last)[0], blendshapes=False).landmarks
    iod = np.linalg.norm(fresh[33, :2] - fresh[263, :2])
    err = np.linalg.norm(boxes[-1][0].landmarks[:, :2] - fresh[:, :2], axis=1)
    assert np.median(err) / iod < 0.03


def test_tracker_redetects_when_the_face_is_lost_and_resets(det, lmk, decoded_clips):
    frames = clip(decoded_clips, "HAP")[:20]
    black = np.zeros_like(frames[0])
    tracker = FaceMeshTracker(det, lmk)
    out = [tracker.detect(f) for f in frames[:10]]
    assert tracker.detector_runs == 1
    assert tracker.detect(black) == []  # presence drops on the black region: track dropped
    runs = tracker.detector_runs
    again = tracker.detect(frames[10])
    assert len(again) == 1 and tracker.detector_runs == runs + 1
    assert again[0].track_id == 1  # a new track after a loss
    tracker.reset()
    first = tracker.detect(frames[11])
    assert first[0].track_id == 0 and tracker.detector_runs == 1
    assert all(len(o) == 1 for o in out)


def test_presence_is_low_off_the_face(det, lmk, decoded_clips):
    frame = clip(decoded_clips, "NEU")[5]
    d = det.detections(frame)[0]
    roi = roi_from_keypoints(d.box, d.keypoints)
    on = lmk.mesh(frame, [roi])[0]
    shifted = type(roi)(roi.cx + roi.width * 0.75, roi.cy, roi.width, roi.height, roi.rotation)
    off = lmk.mesh(frame, [shifted])[0]
    assert on.presence > 0.99 and off.presence < 0.5
    # the region for the next frame, from the landmarks, stays on the face
    nxt = roi_from_landmarks(on.landmarks)
    assert abs(nxt.cx - roi.cx) < 0.1 * roi.width and abs(nxt.width / roi.width - 1) < 0.2


def test_two_faces_keep_their_tracks(det, lmk, decoded_clips):
    a, b = clip(decoded_clips, "ANG"), clip(decoded_clips, "SAD")
    tracker = FaceMeshTracker(det, lmk, max_faces=2, blendshapes=False)
    ids = []
    for i in range(0, 30, 3):
        faces = tracker.detect(np.concatenate([a[i], b[i]], axis=1))
        assert len(faces) == 2
        ids.append({f.track_id: f.x < 480 for f in faces})
    assert all(m == ids[0] for m in ids) and sorted(ids[0]) == [0, 1]
    assert tracker.detector_runs == 1


def test_one_tracker_from_two_threads_stays_consistent(det, lmk, decoded_clips):
    frames = clip(decoded_clips, "FEA")[:16]
    tracker = FaceMeshTracker(det, lmk, blendshapes=False)
    errors = []

    def work(chunk):
        try:
            for f in chunk:
                assert len(tracker.detect(f)) == 1
        except Exception as e:  # collected: an assertion in a thread would be lost
            errors.append(e)

    threads = [threading.Thread(target=work, args=(frames[k::2],)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and tracker.detector_runs == 1


def test_refine_any_face_box(det, lmk, decoded_clips):
    frame = clip(decoded_clips, "DIS")[10]
    box = det.detect(frame)[0]
    refined = lmk.refine(frame, box)
    assert refined.landmarks.shape == (478, 3) and refined.blendshapes.shape == (52,)
    assert (refined.x, refined.w, refined.score) == (box.x, box.w, box.score)
    inside = (refined.landmarks[:, 0] > box.x - 0.3 * box.w) & (
        refined.landmarks[:, 0] < box.x + 1.3 * box.w
    )
    assert inside.all()
    # a box without keypoints (Haar) gets an unrotated region and still a face
    plain = to_face_box(det.detections(frame)[0], *frame.shape[:2])
    plain = type(plain)(plain.x, plain.y, plain.w, plain.h)
    assert lmk.refine(frame, plain).presence > 0.9
    # float frames give the same landmarks within rounding
    same = lmk.refine(frame.astype(np.float64) / 255, box).landmarks
    assert np.abs(same - refined.landmarks).max() < 0.5


def test_bad_input_and_options(det, lmk, tmp_path):
    with pytest.raises(InputError, match=r"landmarks: expected an array \(478, 2\|3\)"):
        lmk.blendshapes(np.zeros((146, 2)))
    with pytest.raises(InputError, match="expected"):
        lmk.mesh(np.zeros((10, 10, 4), np.uint8), [])
    with pytest.raises(ModelError, match="must take input 'image'"):
        FaceLandmarker(DEFAULT_MODELS / "face_blendshapes.onnx")
    with pytest.raises(ModelError, match="does not exist"):
        FaceLandmarker(tmp_path / "x.onnx")
    no_bs = FaceLandmarker(DEFAULT_MODELS / "face_landmarks.onnx")
    with pytest.raises(ConfigError, match="blendshape model"):
        FaceMeshTracker(det, no_bs)
    with pytest.raises(ConfigError, match="max_faces"):
        FaceMeshTracker(det, lmk, max_faces=0)
    with pytest.raises(ConfigError, match="min_presence"):
        FaceMeshTracker(det, lmk, min_presence=2)
    tracker = FaceMeshTracker(det, no_bs, blendshapes=False)
    with pytest.raises(InputError, match="expected"):
        tracker.detect(np.zeros((360, 480, 3), np.int32))


def test_closed_graphs_and_a_missing_blendshape_model_raise_typed_errors(decoded_clips):
    frame = clip(decoded_clips, "HAP")[10]
    det = BlazeFaceDetector(DEFAULT_MODELS / "face_detector.onnx")
    box = det.detect(frame)[0]
    no_bs = FaceLandmarker(DEFAULT_MODELS / "face_landmarks.onnx")
    lm = no_bs.refine(frame, box, blendshapes=False).landmarks
    with pytest.raises(ConfigError, match="blendshape_model"):
        no_bs.blendshapes(lm)
    det.close()
    no_bs.close()
    with pytest.raises(BackendError, match="closed"):
        det.detect(frame)
    with pytest.raises(BackendError, match="closed"):
        no_bs.mesh(frame, [roi_from_keypoints((0, 0, 50, 50), np.zeros((6, 2), np.float32))])
