"""Face detection for full camera frames.

The runtime needs only numpy and onnxruntime; detecting faces in full frames needs OpenCV
(``pip install "emosdk[capture]"``, which pins ``opencv-python-headless<5`` because the 5.x wheels
ship no Haar cascade files). Face crops passed in directly need no detector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import BackendUnavailableError

logger = logging.getLogger("emosdk")


@dataclass(frozen=True)
class FaceBox:
    """A detected face in pixel coordinates of the frame, with the detector's score."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0

    @property
    def area(self) -> int:
        return self.w * self.h


class FaceDetector(Protocol):
    """Finds faces in a frame; returns boxes, largest first."""

    def detect(self, image: np.ndarray) -> list[FaceBox]: ...


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade (shipped in the opencv-python(-headless) 4.x wheels).

    Args:
        min_size: smallest face side in pixels.
        scale_factor: image pyramid step.
        min_neighbors: detections needed to accept a face (higher = fewer false positives).
        max_side: frames are downscaled so that their longer side is at most this (pixels).
    """

    max_side = 320

    def __init__(self, min_size: int = 40, scale_factor: float = 1.1, min_neighbors: int = 5):
        try:
            import cv2
        except ImportError as e:
            raise BackendUnavailableError(
                'face detection in full frames needs OpenCV: pip install "emosdk[capture]" '
                "(or pass face crops with face=...)"
            ) from e
        path = getattr(getattr(cv2, "data", None), "haarcascades", "")
        path = f"{path}haarcascade_frontalface_default.xml"
        classifier = getattr(cv2, "CascadeClassifier", None)
        cascade = classifier(path) if classifier is not None else None
        if cascade is None or cascade.empty():
            raise BackendUnavailableError(
                f"OpenCV {cv2.__version__} has no Haar face cascade ({path}); OpenCV 5 wheels ship "
                'none. Install opencv-python-headless<5: pip install "emosdk[capture]"'
            )
        self._cv2 = cv2
        self._cascade = cascade
        self._kw = dict(
            scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_size, min_size)
        )

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        gray = image
        if image.ndim == 3:
            gray = self._cv2.cvtColor(image, self._cv2.COLOR_BGR2GRAY)
        if gray.dtype != np.uint8:
            gray = (np.clip(gray, 0, 1) * 255).astype(np.uint8)
        # the cascade's cost grows with the pixel count; faces stay detectable at 320 px
        scale = min(1.0, self.max_side / max(gray.shape))
        if scale < 1.0:
            size = (round(gray.shape[1] * scale), round(gray.shape[0] * scale))
            gray = self._cv2.resize(gray, size, interpolation=self._cv2.INTER_AREA)
        kw = dict(self._kw)
        side = max(20, round(self._kw["minSize"][0] * scale))
        kw["minSize"] = (side, side)
        found = self._cascade.detectMultiScale(gray, **kw)
        boxes = [
            FaceBox(round(x / scale), round(y / scale), round(w / scale), round(h / scale))
            for x, y, w, h in found
        ]
        return sorted(boxes, key=lambda b: b.area, reverse=True)


def crop(image: np.ndarray, box: FaceBox, margin: float = 0.1) -> np.ndarray:
    """Square crop around ``box`` enlarged by ``margin`` of its side, clipped to the frame."""
    side = int(round(max(box.w, box.h) * (1 + 2 * margin)))
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0 = int(max(0, round(cx - side / 2)))
    y0 = int(max(0, round(cy - side / 2)))
    x1 = int(min(image.shape[1], x0 + side))
    y1 = int(min(image.shape[0], y0 + side))
    return np.ascontiguousarray(image[y0:y1, x0:x1])
