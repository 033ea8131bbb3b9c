"""Face detection, eye landmarks, alignment and tracking on the real CREMA-D frames."""

import math

import numpy as np
import pytest

from emosdk import Modality, Recognizer
from emosdk.capture import ArraySource
from emosdk.perception.face import FaceBox, FaceTracker, HaarFaceDetector, align, crop


@pytest.fixture(scope="module")
def detector():
    return HaarFaceDetector()


def test_one_face_with_two_eyes_in_real_frames(detector, decoded_clips):
    found = eyes = 0
    for _, _, frames in decoded_clips:
        for _, f in frames[::10]:
            boxes = detector.detect(f)
            found += len(boxes) == 1
            if boxes and boxes[0].left_eye is not None:
                eyes += 1
                b = boxes[0]
                assert b.x < b.left_eye[0] < b.right_eye[0] < b.x + b.w
                assert b.y < b.left_eye[1] < b.y + b.h / 2
    assert found >= 40 and eyes >= found * 0.6


def test_alignment_levels_a_tilted_face(detector, decoded_clips):
    import cv2

    _, _, frames = decoded_clips[4]
    frame = frames[20][1]
    h, w = frame.shape[:2]
    tilted = cv2.warpAffine(frame, cv2.getRotationMatrix2D((w / 2, h / 2), 12, 1.0), (w, h))
    box = detector.detect(tilted)[0]
    assert box.left_eye is not None
    tilt = math.degrees(
        math.atan2(box.right_eye[1] - box.left_eye[1], box.right_eye[0] - box.left_eye[0])
    )
    assert abs(tilt) > 6  # the eyes really are tilted in the input
    level = detector.detect(align(tilted, box))
    if level and level[0].left_eye is not None:
        b = level[0]
        new_tilt = math.degrees(
            math.atan2(b.right_eye[1] - b.left_eye[1], b.right_eye[0] - b.left_eye[0])
        )
        assert abs(new_tilt) < abs(tilt) / 2


def test_crop_is_square_and_clipped():
    img = np.zeros((100, 120, 3), np.uint8)
    c = crop(img, FaceBox(100, 80, 40, 40))  # 48 px square, cut by the frame's corner
    assert c.shape == (24, 24, 3) and c.flags.c_contiguous
    c = crop(img, FaceBox(30, 20, 40, 40))
    assert c.shape[:2] == (48, 48)


def test_crop_at_the_left_edge_is_the_mirror_of_the_crop_at_the_right_edge(decoded_clips):
    # clipped on every side alike: at the left or top edge the square used to slide into the
    # frame (off the face's centre) while at the right or bottom edge it was cut
    frame = decoded_clips[0][2][20][1]  # a real 480x360 frame
    h, w = frame.shape[:2]
    mirrored = np.ascontiguousarray(frame[:, ::-1])
    for x, y in ((0, 150), (6, 2), (100, 0)):
        box = FaceBox(x, y, 90, 100)
        twin = FaceBox(w - x - 90, y, 90, 100)  # the same box in the mirrored frame
        np.testing.assert_array_equal(crop(frame, box), crop(mirrored, twin)[:, ::-1])
        flipped = np.ascontiguousarray(frame[::-1])
        twin_v = FaceBox(x, h - y - 100, 90, 100)
        np.testing.assert_array_equal(crop(frame, box), crop(flipped, twin_v)[::-1])


def test_tracker_keeps_ids_and_separates_faces():
    tr = FaceTracker(max_faces=2, max_missed=2)
    a, b = FaceBox(10, 10, 50, 50), FaceBox(200, 10, 60, 60)
    first = tr.update([b, a])
    ids = {f.x: f.track_id for f in first}
    moved = tr.update([FaceBox(205, 12, 60, 60), FaceBox(14, 11, 50, 50)])
    assert {f.x: f.track_id for f in moved} == {205: ids[200], 14: ids[10]}
    for _ in range(3):
        tr.update([FaceBox(205, 12, 60, 60)])
    assert tr.active == [ids[200]]  # the other face was gone for more than max_missed frames
    again = tr.update([FaceBox(205, 12, 60, 60), FaceBox(14, 11, 50, 50)])
    assert {f.track_id for f in again} == {ids[200], max(ids.values()) + 1}
    assert len(tr.update([a, b, FaceBox(400, 10, 30, 30)])) == 2


def test_two_people_get_two_tracks_with_stable_ids(fixture_bundle, decoded_clips):
    _, audio, frames_a = decoded_clips[0]
    _, _, frames_b = decoded_clips[3]
    n = min(len(frames_a), len(frames_b))
    pair = [np.concatenate([frames_a[i][1], frames_b[i][1]], axis=1) for i in range(n)]
    src = ArraySource(audio=audio, sample_rate=16000, frames=pair, fps=29.97)
    with Recognizer(model=fixture_bundle, max_faces=2) as rec:
        results = list(rec.stream(source=src))
    by_t: dict[float, list] = {}
    for r in results:
        by_t.setdefault(r.timestamp_ms, []).append(r)
    assert all(len(rs) == 2 for rs in by_t.values())
    ids = {tuple(sorted(r.track_id for r in rs)) for rs in by_t.values()}
    assert len(ids) == 1 and len(next(iter(ids))) == 2  # the same two ids all along
    for rs in by_t.values():
        for r in rs:
            assert Modality.VIDEO in r.modalities
    later = by_t[max(by_t)]
    assert later[0].scores != later[1].scores  # two different faces, two different estimates
