"""train/face_crops.py: the crop geometry it measures is the runtime's own crop
(emosdk.perception.face.align), checked on a real CREMA-D frame."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from emosdk.capture.media import read_media
from emosdk.perception.face import align, create_face_detector
from train.face_crops import (
    FER_EYE_DIST,
    FER_EYE_Y,
    aligned_frame_map,
    fer_framed,
    geometry,
    summarise,
)


def test_mapped_keypoints_land_where_the_detector_finds_them_in_the_crop(shared_data):
    _, frames = read_media(shared_data / "cremad" / "av_clips" / "1001_DFA_HAP_XX.flv")
    det = create_face_detector("blazeface")
    frame = frames[20][1]
    box = det.detect(frame)[0]
    side, to_crop = aligned_frame_map(box)
    crop = align(frame, box)
    assert crop.shape[:2] == (side, side)
    mapped = to_crop(np.asarray(box.keypoints[:2], np.float64))
    # BlazeFace run again on the crop finds the eyes where the map puts them
    canvas = np.pad(crop, ((side, side), (side, side), (0, 0)), mode="edge")
    again = det.detect(canvas)[0]
    found = np.sort(np.asarray(again.keypoints[:2], np.float64) - side, axis=0)
    assert np.abs(np.sort(mapped, axis=0) - found).max() < 0.04 * side
    g = geometry(box, side, to_crop)
    assert 0.2 < g["eye_y"] < 0.5 and g["box_side"] == max(box.w, box.h) / side
    s = summarise([g, g])
    assert s["n"] == 2 and s["eye_y"]["median"] == round(g["eye_y"], 4)


def test_fer_framed_crop_puts_the_eyes_where_fer2013_has_them(shared_data):
    _, frames = read_media(shared_data / "cremad" / "av_clips" / "1001_DFA_SAD_XX.flv")
    det = create_face_detector("blazeface")
    frame = frames[30][1]
    box = det.detect(frame)[0]
    crop = fer_framed(frame, box)
    side = crop.shape[0]
    canvas = np.pad(crop, ((side, side), (side, side), (0, 0)), mode="edge")
    eyes = np.asarray(det.detect(canvas)[0].keypoints[:2], np.float64) - side
    assert abs(eyes[:, 1].mean() / side - FER_EYE_Y) < 0.03
    assert abs(np.linalg.norm(eyes[0] - eyes[1]) / side - FER_EYE_DIST) < 0.03
    assert fer_framed(frame, replace(box, left_eye=None)) is None
