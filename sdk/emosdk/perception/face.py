"""Face detection, eye landmarks, alignment and tracking for full camera frames.

The runtime needs only numpy and onnxruntime; detecting faces in full frames needs OpenCV
(``pip install "emosdk[capture]"``, which pins ``opencv-python-headless<5`` because the 5.x wheels
ship no Haar cascade files). Face crops passed in directly need no detector.

Why Haar and not mediapipe: see docs/design.md (mediapipe's face models ship only in the 0.10.x
wheels, which need numpy < 2 and jax, and stop at 0.10.18 on aarch64).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from ..errors import BackendUnavailableError

logger = logging.getLogger("emosdk")


@dataclass(frozen=True)
class FaceBox:
    """A detected face in pixel coordinates of the frame.

    Attributes:
        x, y, w, h: the box.
        score: detector confidence (Haar has none: 1.0).
        left_eye, right_eye: eye centres in frame pixels (the subject's left/right as seen in
            the image: left_eye has the smaller x), or None when not found.
        track_id: stable identity across frames, set by :class:`FaceTracker`.
    """

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0
    left_eye: tuple[float, float] | None = None
    right_eye: tuple[float, float] | None = None
    track_id: int = 0

    @property
    def area(self) -> int:
        return self.w * self.h

    def iou(self, other: FaceBox) -> float:
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union else 0.0


class FaceDetector(Protocol):
    """Finds faces in a frame; returns boxes, largest first."""

    def detect(self, image: np.ndarray) -> list[FaceBox]: ...


def _cascade(cv2, name: str):
    path = f"{getattr(getattr(cv2, 'data', None), 'haarcascades', '')}{name}"
    classifier = getattr(cv2, "CascadeClassifier", None)
    cascade = classifier(path) if classifier is not None else None
    if cascade is None or cascade.empty():
        raise BackendUnavailableError(
            f"OpenCV {cv2.__version__} has no Haar cascade {name}; OpenCV 5 wheels ship none. "
            'Install opencv-python-headless<5: pip install "emosdk[capture]"'
        )
    return cascade


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade, with eye centres from the eye cascade.

    Args:
        min_size: smallest face side in pixels (of the full frame).
        scale_factor: image pyramid step.
        min_neighbors: detections needed to accept a face (higher = fewer false positives).
        find_eyes: also locate the eyes (for alignment).
        max_side: frames are downscaled so their longer side is at most this (pixels); the
            cascade's cost grows with the pixel count and faces stay detectable at 320 px.
        color_order: channel order of colour frames, ``"bgr"`` (OpenCV) or ``"rgb"``.
    """

    def __init__(
        self,
        min_size: int = 40,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        find_eyes: bool = True,
        max_side: int = 320,
        color_order: str = "bgr",
    ) -> None:
        try:
            import cv2
        except ImportError as e:
            raise BackendUnavailableError(
                'face detection in full frames needs OpenCV: pip install "emosdk[capture]" '
                "(or pass face crops with face=...)"
            ) from e
        self._cv2 = cv2
        self._faces = _cascade(cv2, "haarcascade_frontalface_default.xml")
        self._eyes = _cascade(cv2, "haarcascade_eye.xml") if find_eyes else None
        self._min_size = min_size
        self._kw = dict(scaleFactor=scale_factor, minNeighbors=min_neighbors)
        self.max_side = max_side
        self._to_gray = cv2.COLOR_RGB2GRAY if color_order == "rgb" else cv2.COLOR_BGR2GRAY

    def _gray(self, image: np.ndarray) -> np.ndarray:
        gray = image
        if image.ndim == 3:
            code = self._to_gray if image.shape[2] == 3 else None
            gray = self._cv2.cvtColor(image, code) if code is not None else image[..., 0]
        if gray.dtype != np.uint8:
            gray = (np.clip(gray, 0, 1) * 255).astype(np.uint8)
        return np.ascontiguousarray(gray)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        gray = self._gray(image)
        scale = min(1.0, self.max_side / max(gray.shape))
        small = gray
        if scale < 1.0:
            size = (round(gray.shape[1] * scale), round(gray.shape[0] * scale))
            small = self._cv2.resize(gray, size, interpolation=self._cv2.INTER_AREA)
        side = max(20, round(self._min_size * scale))
        found = self._faces.detectMultiScale(small, minSize=(side, side), **self._kw)
        boxes = [
            FaceBox(round(x / scale), round(y / scale), round(w / scale), round(h / scale))
            for x, y, w, h in found
        ]
        boxes.sort(key=lambda b: b.area, reverse=True)
        if self._eyes is not None:
            boxes = [self._with_eyes(gray, b) for b in boxes]
        return boxes

    def _with_eyes(self, gray: np.ndarray, box: FaceBox) -> FaceBox:
        # eye centres lie at about 40 % of a frontal face box's height; search the top 60 %
        top = gray[box.y : box.y + int(box.h * 0.6), box.x : box.x + box.w]
        if top.size == 0:
            return box
        lo, hi = max(8, box.w // 10), max(9, int(box.w * 0.35))
        eyes = self._eyes.detectMultiScale(
            top, scaleFactor=1.1, minNeighbors=5, minSize=(lo, lo), maxSize=(hi, hi)
        )
        centres = [(box.x + ex + ew / 2, box.y + ey + eh / 2, ew * eh) for ex, ey, ew, eh in eyes]
        mid = box.x + box.w / 2
        left = [c for c in centres if c[0] < mid]
        right = [c for c in centres if c[0] >= mid]
        if not left or not right:
            return box
        le = max(left, key=lambda c: c[2])
        re_ = max(right, key=lambda c: c[2])
        return replace(box, left_eye=(le[0], le[1]), right_eye=(re_[0], re_[1]))


def crop(image: np.ndarray, box: FaceBox, margin: float = 0.1) -> np.ndarray:
    """Square crop around ``box`` enlarged by ``margin`` of its side, clipped to the frame."""
    side = int(round(max(box.w, box.h) * (1 + 2 * margin)))
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0 = int(max(0, round(cx - side / 2)))
    y0 = int(max(0, round(cy - side / 2)))
    x1 = int(min(image.shape[1], x0 + side))
    y1 = int(min(image.shape[0], y0 + side))
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def align(image: np.ndarray, box: FaceBox, margin: float = 0.1) -> np.ndarray:
    """Crop a face with its eyes levelled (rotation about the eye midpoint).

    Without both eye centres (or with an implausible tilt over 30 degrees) this is :func:`crop`.
    Needs OpenCV for the rotation.
    """
    if box.left_eye is None or box.right_eye is None:
        return crop(image, box, margin)
    (lx, ly), (rx, ry) = box.left_eye, box.right_eye
    angle = math.degrees(math.atan2(ry - ly, rx - lx))
    if abs(angle) > 30:
        return crop(image, box, margin)
    import cv2

    centre = ((lx + rx) / 2, (ly + ry) / 2)
    m = cv2.getRotationMatrix2D(centre, angle, 1.0)
    rotated = cv2.warpAffine(
        image,
        m,
        (image.shape[1], image.shape[0]),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return crop(rotated, box, margin)


class FaceTracker:
    """Greedy IoU tracker: a face keeps its ``track_id`` while its box overlaps its last one.

    Args:
        iou_threshold: overlap needed to continue a track.
        max_missed: frames a track survives without a match.
        max_faces: faces tracked at once (the largest ones).
    """

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 15, max_faces: int = 1):
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.max_faces = max_faces
        self._tracks: dict[int, tuple[FaceBox, int]] = {}  # id -> (last box, frames missed)
        self._next_id = 0

    def update(self, boxes: list[FaceBox]) -> list[FaceBox]:
        """Assign track ids to this frame's boxes (largest first); returns the tracked boxes."""
        boxes = boxes[: self.max_faces]
        pairs = sorted(
            (
                (b.iou(tb), i, tid)
                for i, b in enumerate(boxes)
                for tid, (tb, _) in self._tracks.items()
            ),
            reverse=True,
        )
        assigned: dict[int, int] = {}
        used: set[int] = set()
        for iou, i, tid in pairs:
            if iou < self.iou_threshold:
                break
            if i in assigned or tid in used:
                continue
            assigned[i] = tid
            used.add(tid)
        out = []
        for i, b in enumerate(boxes):
            tid = assigned.get(i)
            if tid is None:
                tid = self._next_id
                self._next_id += 1
            tracked = replace(b, track_id=tid)
            self._tracks[tid] = (tracked, 0)
            out.append(tracked)
        for tid in list(self._tracks):
            if tid not in used and tid not in {b.track_id for b in out}:
                box, missed = self._tracks[tid]
                if missed + 1 > self.max_missed:
                    del self._tracks[tid]
                else:
                    self._tracks[tid] = (box, missed + 1)
        return out

    @property
    def active(self) -> list[int]:
        return sorted(self._tracks)

    def reset(self) -> None:
        self._tracks.clear()
        self._next_id = 0
