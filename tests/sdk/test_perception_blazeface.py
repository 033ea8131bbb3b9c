"""BlazeFace on ONNX Runtime: parity with the TFLite reference, recall, robustness, bad input.

All on real frames: the six CREMA-D clips and CK+ / FER2013 faces from ../shared/data (padded
into a frame as tools/convert_mediapipe.py does). The reference outputs in
tests/data/mediapipe_reference.npz come from MediaPipe's own TFLite models run by the LiteRT
interpreter (``python tools/convert_mediapipe.py reference``), so these tests need no TensorFlow.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from perception_reference import pad_face, reference_frames  # tests/sdk/perception_reference.py

from emosdk import Modality, Recognizer
from emosdk.capture import ArraySource
from emosdk.errors import ConfigError, InputError, ModelError
from emosdk.perception import BlazeFaceDetector, HaarFaceDetector, align, create_face_detector
from emosdk.perception.blazeface import (
    ANCHORS,
    letterbox_rect,
    preprocess,
    tile_rects,
    weighted_nms,
)
from emosdk.perception.face import DEFAULT_MODELS, FaceBox


@pytest.fixture(scope="module")
def det():
    return BlazeFaceDetector(DEFAULT_MODELS / "face_detector.onnx")


@pytest.fixture(scope="module")
def haar():
    return HaarFaceDetector()


@pytest.fixture(scope="module")
def frames(decoded_clips):
    return [f for _, _, fr in decoded_clips for _, f in fr]


@pytest.fixture(scope="module")
def ckplus(shared_data):
    import csv

    import cv2

    with open(shared_data / "ckplus48" / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    return [
        (r["label"], pad_face(cv2.imread(str(shared_data / "ckplus48" / r["file"]), 0)))
        for r in rows[::6]
    ]


# -- parity with MediaPipe's TFLite model --------------------------------------------------------


def test_matches_the_tflite_reference_on_real_frames(det, decoded_clips, shared_data):
    # measured: boxes and keypoints within 1e-4 px, scores within 1e-5 of LiteRT's
    cases = reference_frames(decoded_clips, shared_data)
    assert len(cases) >= 30
    kinds = {fid.split("/")[0] for fid, _, _ in cases}
    assert kinds == {"cremad", "ckplus48", "fer2013"}
    for fid, frame, ref in cases:
        found = det.detections(frame)
        assert len(found) == int(ref["n_faces"]), fid
        if not found:
            continue
        d = found[0]
        np.testing.assert_allclose(d.box, ref["box"], atol=0.05, err_msg=fid)
        np.testing.assert_allclose(d.keypoints, ref["keypoints"], atol=0.05, err_msg=fid)
        assert abs(d.score - float(ref["score"])) < 1e-3, fid


def test_anchors_and_letterbox_follow_mediapipe():
    assert ANCHORS.shape == (896, 2)
    np.testing.assert_allclose(ANCHORS[0], [1 / 32, 1 / 32])  # stride 8: 16x16 cells, 2 each
    np.testing.assert_allclose(ANCHORS[1], ANCHORS[0])
    np.testing.assert_allclose(ANCHORS[512], [1 / 16, 1 / 16])  # stride 16: 8x8 cells, 6 each
    np.testing.assert_allclose(ANCHORS[517], ANCHORS[512])
    np.testing.assert_allclose(ANCHORS[-1], [15 / 16, 15 / 16])
    r = letterbox_rect(360, 480)
    assert (r.cx, r.cy, r.width, r.height) == (240, 180, 480, 480)
    # the letterbox pads above and below with black: -1 in the detector's input range
    x, _ = preprocess(np.full((360, 480, 3), 255, np.uint8))
    assert x.shape == (1, 128, 128, 3) and x.dtype == np.float32
    assert np.all(x[0, :10] == -1.0) and np.all(x[0, 20:100] == 1.0)


def test_weighted_nms_merges_overlaps_and_keeps_the_best_score():
    boxes = np.float32([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]])
    kps = np.zeros((3, 6, 2), np.float32)
    kps[1] += 2.0
    scores = np.float32([0.9, 0.6, 0.8])
    out = weighted_nms(boxes, kps, scores, 0.3)
    assert len(out) == 2
    box, kp, score = out[0]
    assert score == pytest.approx(0.9)
    np.testing.assert_allclose(box, [0.4, 0, 10.4, 10], atol=1e-5)  # (0.9*0 + 0.6*1) / 1.5
    np.testing.assert_allclose(kp, 0.8, atol=1e-5)
    assert out[1][2] == pytest.approx(0.8)


# -- recall: at least Haar's -------------------------------------------------------------------


def test_recall_on_the_clips_at_least_haars(det, haar, frames):
    sample = frames[::3]
    ours = sum(len(det.detect(f)) == 1 for f in sample)
    theirs = sum(len(haar.detect(f)) == 1 for f in sample)
    assert ours == len(sample) and ours >= theirs  # measured: 379 / 379 for both


def test_recall_on_ckplus_at_least_haars(det, haar, ckplus):
    ours = sum(len(det.detect(f)) >= 1 for _, f in ckplus)
    theirs = sum(len(haar.detect(f)) >= 1 for _, f in ckplus)
    assert ours >= theirs and ours >= 0.98 * len(ckplus)  # measured: 822 / 822 for both


def test_boxes_and_eyes_are_plausible(det, frames):
    for f in frames[::20]:
        b = det.detect(f)[0]
        h, w = f.shape[:2]
        assert 0 <= b.x and b.x + b.w <= w and 0 <= b.y and b.y + b.h <= h
        assert 0.5 < b.score <= 1.0 and 60 < b.w < 200
        assert b.x < b.left_eye[0] < b.right_eye[0] < b.x + b.w
        assert b.y < b.left_eye[1] < b.y + b.h / 2
        assert b.keypoints.shape == (6, 2) and b.landmarks is None
        # the mouth is below the nose, which is below the eyes
        assert b.keypoints[3, 1] > b.keypoints[2, 1] > max(b.left_eye[1], b.right_eye[1])


# -- robustness ---------------------------------------------------------------------------------


def test_small_faces_of_40_px(det, frames):
    import cv2

    found = total = 0
    for f in frames[::60]:
        b = det.detect(f)[0]
        tiny = cv2.resize(f, None, fx=40 / b.w, fy=40 / b.w, interpolation=cv2.INTER_AREA)
        for py, px in ((0, 0), (360 - tiny.shape[0], 480 - tiny.shape[1])):
            canvas = np.full_like(f, 100)
            canvas[py : py + tiny.shape[0], px : px + tiny.shape[1]] = tiny
            boxes = det.detect(canvas)
            total += 1
            if boxes:
                found += 1
                assert 25 < boxes[0].w < 60  # the face, not the whole scaled frame
    assert found == total  # only the 2x2 tiles find them: the letterboxed frame alone misses
    no_tiles = BlazeFaceDetector(DEFAULT_MODELS / "face_detector.onnx", small_faces="off")
    assert no_tiles.detect(canvas) == []


def test_darkened_frames(det, haar, frames):
    sample = frames[::40]
    for gain in (0.2, 0.05):
        dark = [np.round(f * gain).astype(np.uint8) for f in sample]
        assert all(len(det.detect(f)) == 1 for f in dark), gain
    # measured: Haar finds none at 0.2, BlazeFace all down to 0.05
    assert sum(len(haar.detect(np.round(f * 0.2).astype(np.uint8))) for f in sample) == 0


def test_rotated_and_mirrored_faces(det, frames):
    import cv2

    for f in frames[::60]:
        h, w = f.shape[:2]
        for angle in (30, -45, 90):
            rot = cv2.warpAffine(f, cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1), (w, h))
            assert len(det.detect(rot)) == 1, angle
        mirrored = np.ascontiguousarray(f[:, ::-1])
        a, b = det.detect(f)[0], det.detect(mirrored)[0]
        back = FaceBox(w - b.x - b.w, b.y, b.w, b.h)  # the mirrored box, mirrored back
        assert a.iou(back) > 0.8  # measured: 0.84 to 0.93 (the detector is not symmetric)


def test_profile_like_views_from_fer2013(det, haar, shared_data):
    """FER2013 holds turned heads (three-quarter and some profile views): recall on 300
    PublicTest faces at least Haar's."""
    import csv

    import cv2

    with open(shared_data / "fer2013" / "manifest.csv") as f:
        rows = [r["file"] for r in csv.DictReader(f) if r["usage"] == "PublicTest"][::12]
    imgs = [pad_face(cv2.imread(str(shared_data / "fer2013" / r), 0)) for r in rows]
    ours = sum(len(det.detect(i)) >= 1 for i in imgs)
    theirs = sum(len(haar.detect(i)) >= 1 for i in imgs)
    assert ours >= theirs, (ours, theirs)


def test_two_real_faces_in_one_frame(det, decoded_clips):
    import cv2

    a = decoded_clips[0][2][20][1]
    b = decoded_clips[3][2][30][1]
    boxes = det.detect(np.concatenate([a, b], axis=1))  # 960x360, two faces of ~105 px
    assert len(boxes) == 2 and boxes[0].area >= boxes[1].area  # largest first
    assert {bx.x + bx.w <= 480 for bx in boxes} == {True, False}
    # the second person further away (80 px): under 13 px of the letterboxed input, found
    # only by the tiles, which run on every frame with small_faces="always"
    far = cv2.resize(b, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    frame = np.zeros((360, 480 + far.shape[1], 3), np.uint8)
    frame[:, :480] = a
    frame[45 : 45 + far.shape[0], 480:] = far
    assert len(det.detect(frame)) == 1
    wide = BlazeFaceDetector(DEFAULT_MODELS / "face_detector.onnx", small_faces="always")
    boxes = wide.detect(frame)
    assert len(boxes) == 2 and boxes[0].x + boxes[0].w <= 480 and boxes[1].x >= 480
    assert boxes[0].area > boxes[1].area


# -- every image _validate.image accepts, and bad frames -----------------------------------------


def frame_variants(bgr: np.ndarray) -> dict[str, np.ndarray]:
    import cv2

    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    out = {}
    for name, img in (("bgr", bgr), ("grey", grey), ("grey1", grey[..., None])):
        out[f"{name}-uint8"] = np.ascontiguousarray(img)
        out[f"{name}-float32"] = np.ascontiguousarray(img.astype(np.float32) / 255)
        out[f"{name}-float64"] = np.ascontiguousarray(img.astype(np.float64) / 255)
    return out


@pytest.mark.parametrize("kind", ["blazeface", "haar"])
def test_every_accepted_dtype_and_layout(kind, det, haar, decoded_clips):
    d = det if kind == "blazeface" else haar
    bgr = decoded_clips[2][2][15][1]
    ref = d.detect(bgr)[0]
    for name, img in frame_variants(bgr).items():
        boxes = d.detect(img)
        assert boxes, name
        assert boxes[0].iou(ref) > 0.85, (name, boxes[0], ref)
        crop = align(img, boxes[0])
        assert crop.dtype == img.dtype and crop.ndim == img.ndim and crop.shape[0] > 50


def test_float64_colour_frames_mid_stream(fixture_bundle, decoded_clips):
    # issue 14: a float64 colour frame in [0, 1] used to crash Haar's colour conversion with an
    # untyped cv2.error; both detectors now take it, also in the middle of a stream
    _, audio, frames = decoded_clips[4]
    imgs = [f if i % 2 else f.astype(np.float64) / 255 for i, (_, f) in enumerate(frames)]
    for detector in ("haar", "auto"):
        src = ArraySource(audio=audio, sample_rate=16000, frames=imgs, fps=29.97)
        with Recognizer(model=fixture_bundle, face_detector=detector) as rec:
            results = list(rec.stream(source=src))
        assert results and all(Modality.VIDEO in r.modalities for r in results), detector


@pytest.mark.parametrize("kind", ["blazeface", "haar"])
def test_bad_frames_raise_input_error(kind, det, haar):
    d = det if kind == "blazeface" else haar
    ok = np.zeros((40, 40, 3), np.uint8)
    bad = {
        "int16": ok.astype(np.int16),
        "bool": ok.astype(bool),
        "4 channels": np.zeros((40, 40, 4), np.uint8),
        "2 channels": np.zeros((40, 40, 2), np.uint8),
        "1-D": np.zeros(100, np.uint8),
        "4-D": np.zeros((1, 40, 40, 3), np.uint8),
        "empty": np.zeros((0, 0, 3), np.uint8),
        "tiny": np.zeros((4, 4, 3), np.uint8),
        "NaN": np.full((40, 40, 3), np.nan, np.float32),
        "float above 1": np.full((40, 40, 3), 2.0, np.float64),
        "strided": np.zeros((40, 80, 3), np.uint8)[:, ::2],
        "list": [[0, 0], [0, 0]],
        "None": None,
    }
    for name, img in bad.items():
        with pytest.raises(InputError, match="expected") as e:
            d.detect(img)
        assert "image" in str(e.value), name


def test_black_and_flat_frames_have_no_face(det):
    assert det.detect(np.zeros((360, 480, 3), np.uint8)) == []
    assert det.detect(np.full((360, 480), 0.5, np.float32)) == []


# -- options, factory, threads -------------------------------------------------------------------


def test_bad_options_are_config_errors(tmp_path):
    path = DEFAULT_MODELS / "face_detector.onnx"
    with pytest.raises(ConfigError, match="min_score"):
        BlazeFaceDetector(path, min_score=1.5)
    with pytest.raises(ConfigError, match="iou_threshold"):
        BlazeFaceDetector(path, iou_threshold=0)
    with pytest.raises(ConfigError, match="color_order: expected 'bgr' or 'rgb'"):
        BlazeFaceDetector(path, color_order="BGR")
    with pytest.raises(ConfigError, match="threads"):
        BlazeFaceDetector(path, threads=0)
    with pytest.raises(ConfigError, match="small_faces: expected 'auto', 'always' or 'off'"):
        BlazeFaceDetector(path, small_faces=True)
    with pytest.raises(ModelError, match="does not exist"):
        BlazeFaceDetector(tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match="junk.onnx"):
        BlazeFaceDetector(tmp_path / "junk.onnx")
    with pytest.raises(ModelError, match="must take input 'image'"):
        BlazeFaceDetector(DEFAULT_MODELS / "face_blendshapes.onnx")
    with pytest.raises(ConfigError, match="scale_factor"):
        HaarFaceDetector(scale_factor=1.0)
    with pytest.raises(ConfigError, match="color_order"):
        HaarFaceDetector(color_order="rgba")


def test_an_unknown_per_call_small_faces_is_an_input_error(det, frames):
    # a typo ran the four tiles as "always" without a word
    with pytest.raises(InputError, match="small_faces: expected 'auto', 'always', 'off' or None"):
        det.detections(frames[0], small_faces="Always")
    assert det.detections(frames[0], small_faces="off")


def test_factory_auto_is_blazeface_and_says_so(caplog, tmp_path):
    with caplog.at_level(logging.INFO, logger="emosdk"):
        d = create_face_detector("auto")
    assert isinstance(d, BlazeFaceDetector)
    assert "face detector: BlazeFace short-range (ONNX Runtime) (auto:" in caplog.text
    assert isinstance(create_face_detector("blazeface", color_order="rgb"), BlazeFaceDetector)
    with pytest.raises(ModelError, match="face_detector.onnx"):
        create_face_detector("blazeface", models=tmp_path)
    with pytest.raises(ConfigError, match=r"face_detector: expected one of .*'blazeface'"):
        create_face_detector("yunet")


def test_color_order_rgb(det, decoded_clips):
    bgr = decoded_clips[1][2][10][1]
    ref = det.detect(bgr)[0]
    rgb_det = BlazeFaceDetector(DEFAULT_MODELS / "face_detector.onnx", color_order="rgb")
    same = rgb_det.detect(np.ascontiguousarray(bgr[..., ::-1]))[0]
    assert same == ref


def test_one_detector_from_several_threads(det, frames):
    sample = frames[::25]
    serial = [det.detect(f) for f in sample]
    results: dict[int, list] = {}

    def work(k):
        results[k] = [det.detect(f) for f in sample]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[k] == serial for k in range(4))


def test_tiles_cover_the_frame():
    rects = tile_rects(360, 480)
    assert len(rects) == 4
    xs = [(r.cx - r.width / 2, r.cx + r.width / 2) for r in rects]
    assert min(a for a, _ in xs) <= 0 and max(b for _, b in xs) >= 480
    assert all(r.width == 300 for r in rects)  # 1.6x the letterbox magnification
    assert FaceBox(0, 0, 2, 2) == FaceBox(0, 0, 2, 2, keypoints=np.zeros((6, 2)))


def test_a_one_tile_grid_is_one_centred_tile_and_no_grid_an_input_error():
    # grid=1 divided by grid - 1 = 0 (an untyped ZeroDivisionError)
    (only,) = tile_rects(360, 480, grid=1, overlap=0.0)
    assert (only.cx, only.cy, only.width, only.height) == (240.0, 180.0, 480.0, 480.0)
    with pytest.raises(InputError, match="grid: expected an int >= 1"):
        tile_rects(360, 480, grid=0)


def test_alignment_levels_the_eyes_with_blazeface_keypoints(det, decoded_clips):
    import cv2

    frame = decoded_clips[4][2][20][1]
    h, w = frame.shape[:2]
    for angle in (12, -20):
        tilted = cv2.warpAffine(frame, cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1), (w, h))
        b = det.detect(tilted)[0]
        tilt = np.degrees(
            np.arctan2(b.right_eye[1] - b.left_eye[1], b.right_eye[0] - b.left_eye[0])
        )
        assert abs(abs(tilt) - abs(angle)) < 4
        crop = align(tilted, b)
        assert crop.shape[0] == crop.shape[1] == round(max(b.w, b.h) * 1.2)
        level = det.detect(crop)[0]
        new = np.degrees(
            np.arctan2(
                level.right_eye[1] - level.left_eye[1], level.right_eye[0] - level.left_eye[0]
            )
        )
        assert abs(new) < abs(tilt) / 4


def test_rotated_crop_opencv_and_numpy_agree(decoded_clips):
    from emosdk.perception.face import rotated_crop

    f = decoded_clips[5][2][12][1]
    for img in frame_variants(f).values():
        a = rotated_crop(img, 220.3, 150.7, 131, 0.2, use_opencv=True)
        b = rotated_crop(img, 220.3, 150.7, 131, 0.2, use_opencv=False)
        assert a.shape == b.shape == (131, 131) + img.shape[2:] and a.dtype == b.dtype == img.dtype
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        scale = 255 if img.dtype == np.uint8 else 1
        assert diff.max() <= 2.0 * scale / 255 + 1e-6 and diff.mean() < 0.2 * scale / 255
    # without rotation the crop is the frame's own pixels
    plain = rotated_crop(f, 240, 180, 100, 0.0, use_opencv=False)
    np.testing.assert_array_equal(plain, f[130:230, 190:290])
