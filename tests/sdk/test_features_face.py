"""Face crop normalisation (numpy-only) against OpenCV's resizers as a reference."""

import numpy as np
import pytest

from emosdk.errors import InputError
from emosdk.features import FaceParams, normalize_face
from emosdk.features.face import resize_area, to_gray

cv2 = pytest.importorskip("cv2", reason="OpenCV is the reference for the numpy resizer")


def test_area_downscale_matches_opencv():
    img = np.random.default_rng(1).random((173, 131))
    ours = resize_area(img, 48)
    ref = cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_bilinear_upscale_matches_opencv():
    img = np.random.default_rng(2).random((20, 31))
    np.testing.assert_allclose(
        resize_area(img, 48), cv2.resize(img, (48, 48), interpolation=cv2.INTER_LINEAR), atol=1e-9
    )


def test_gray_matches_opencv_bgr2gray():
    img = (np.random.default_rng(3).random((30, 30, 3)) * 255).astype(np.uint8)
    ref = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float64) / 255
    assert np.abs(to_gray(img, "bgr") - ref).max() < 1 / 255 + 1e-9
    assert np.abs(to_gray(img[..., ::-1].copy(), "rgb") - ref).max() < 1 / 255 + 1e-9


def test_normalize_face_shape_and_range():
    p = FaceParams()
    out = normalize_face(np.full((100, 80, 3), 255, np.uint8), p)
    assert out.shape == (1, 48, 48) and out.dtype == np.float32
    np.testing.assert_allclose(out, (1.0 - p.mean) / p.std)
    same = normalize_face(np.ones((48, 48), np.float32), p)
    np.testing.assert_allclose(same, out)


@pytest.mark.parametrize(
    ("face", "match"),
    [
        (np.zeros((48, 48, 4), np.uint8), "channels"),
        (np.zeros((48,), np.uint8), "shape"),
        (np.zeros((4, 4), np.uint8), "8x8"),
        (np.full((48, 48), 2.0, np.float32), r"\[0, 1\]"),
        (np.zeros((48, 48), np.int64), "dtype"),
        ("face.png", "ndarray"),
    ],
)
def test_bad_faces_raise_input_error(face, match):
    with pytest.raises(InputError, match=match):
        normalize_face(face, FaceParams())
