"""The recognizer's face path with the bundle's perception graphs: BlazeFace by default (from
the model's bundle, or the bundled default model's for a bundle without them), and the optional
landmark tracking (face_mesh) on the real clips."""

import numpy as np
import pytest

from emosdk import BackendUnavailableError, ConfigError, Modality, Recognizer
from emosdk.perception import BlazeFaceDetector

AV = (Modality.AUDIO, Modality.VIDEO)


def test_a_bundle_without_perception_graphs_uses_the_default_models(fixture_bundle, decoded_clips):
    frame = decoded_clips[3][2][10][1]
    with Recognizer(model=fixture_bundle) as rec:
        assert not rec.bundle.perception
        (box,) = rec.detect_faces(frame)
        assert box.keypoints is not None and box.score > 0.8  # BlazeFace, not Haar
        assert box.landmarks is None
    with Recognizer(model=fixture_bundle, face_detector="haar") as rec:
        (box,) = rec.detect_faces(frame)
        assert box.keypoints is None


def test_the_default_bundle_lists_and_checks_its_perception_graphs():
    with Recognizer() as rec:
        assert set(rec.bundle.perception) == {"face_detector", "face_landmarks", "face_blendshapes"}
        assert rec.bundle.perception_path("face_detector").is_file()


def test_face_mesh_follows_the_face_with_landmarks_in_a_stream(fixture_bundle, av_clips):
    with Recognizer(model=fixture_bundle, face_mesh=True) as rec:
        meshed = list(rec.stream(source=av_clips[3]))
        frame_boxes = rec.detect_faces(np.zeros((360, 480, 3), np.uint8))
    with Recognizer(model=fixture_bundle) as rec:
        plain = list(rec.stream(source=av_clips[3]))
    assert frame_boxes == []
    assert [r.timestamp_ms for r in meshed] == [r.timestamp_ms for r in plain]
    assert all(Modality.VIDEO in r.modalities for r in meshed)
    assert meshed[-1].modalities == AV


def test_face_mesh_boxes_carry_landmarks_and_blendshapes(fixture_bundle, decoded_clips):
    frames = [f for _, f in decoded_clips[3][2][::6]]
    with Recognizer(model=fixture_bundle, face_mesh=True) as rec:
        (box,) = rec.detect_faces(frames[5])
        r = rec.predict(audio=decoded_clips[3][1], frame=frames)
    assert box.landmarks.shape == (478, 3) and box.presence > 0.9
    assert box.blendshapes.shape == (52,)
    assert r.modalities == AV


def test_face_mesh_needs_blazeface():
    with pytest.raises(ConfigError, match="face_mesh"):
        Recognizer(face_mesh=True, face_detector="haar")


def test_blazeface_is_refused_without_its_graph_and_auto_falls_back():
    from emosdk.perception import create_face_detector

    with pytest.raises(BackendUnavailableError, match="BlazeFace graph"):
        create_face_detector("blazeface", detector_model=False)
    assert not isinstance(create_face_detector("auto", detector_model=False), BlazeFaceDetector)


def test_eye_framing_puts_the_eyes_where_the_bundle_says(decoded_clips):
    from emosdk.perception.face import align, create_face_detector

    det = create_face_detector("blazeface")
    frame = decoded_clips[3][2][20][1]
    (box,) = det.detect(frame)
    crop = align(frame, box, eye_line=0.39, eye_distance=0.345)
    (lx, ly), (rx, ry) = box.left_eye, box.right_eye
    assert crop.shape[0] == crop.shape[1] == round(np.hypot(rx - lx, ry - ly) / 0.345)
    side = crop.shape[0]
    canvas = np.full((side * 3, side * 3, 3), 127, np.uint8)  # room for the detector
    canvas[side : 2 * side, side : 2 * side] = crop
    (found,) = det.detect(canvas)
    eyes = np.array([found.left_eye, found.right_eye]) - side
    assert np.abs(eyes[:, 1] / side - 0.39).max() < 0.04  # the eye line
    assert abs(eyes[:, 0].mean() / side - 0.5) < 0.04  # centred
    assert abs((eyes[1, 0] - eyes[0, 0]) / side - 0.345) < 0.04


def test_a_bundle_declares_its_face_framing(fixture_bundle, decoded_clips, tmp_path):
    import json
    import shutil

    frame = decoded_clips[3][2][20][1]
    dst = tmp_path / "bundle"
    shutil.copytree(fixture_bundle, dst)
    meta = json.loads((dst / "model.json").read_text())
    meta["face"].update(eye_line=0.39, eye_distance=0.345)
    (dst / "model.json").write_text(json.dumps(meta))
    with Recognizer(model=fixture_bundle) as box_framed, Recognizer(model=dst) as eye_framed:
        (a,) = box_framed.face_crops(frame)
        (b,) = eye_framed.face_crops(frame)
    assert a.shape != b.shape
    meta["face"]["eye_line"] = None
    (dst / "model.json").write_text(json.dumps(meta))
    from emosdk import ModelError

    with pytest.raises(ModelError, match="eye_line and eye_distance"):
        Recognizer(model=dst)
