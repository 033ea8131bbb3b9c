"""Face detection, eye landmarks, alignment and tracking for full camera frames.

Two detectors implement the :class:`FaceDetector` protocol (``detect(image)`` -> boxes, largest
first, with two eye centres for alignment):

- :class:`MediaPipeFaceDetector`: mediapipe's BlazeFace (``mp.solutions.face_detection``), with
  a detector score and six keypoints per face. Needs the mediapipe 0.10.x wheel
  (``pip install "emosdk[mediapipe]"``: 0.10.21 on x86-64, 0.10.18 on aarch64); the 1.x wheels
  ship no face models, and 0.10.x needs numpy < 2 and pulls jax, so it is an optional extra.
- :class:`HaarFaceDetector`: OpenCV's Haar cascades, the fallback everywhere else
  (``pip install "emosdk[capture]"``, which pins ``opencv-python-headless<5`` because the 5.x
  wheels ship no Haar cascade files).

:func:`create_face_detector` picks one (``RecognizerConfig.face_detector``: ``"auto"`` takes
mediapipe when it imports with its face models, else Haar, and logs which and why). Face crops
passed in directly need no detector. Measurements and reasons: docs/design.md.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import _validate
from ..config import FACE_DETECTORS
from ..errors import BackendError, BackendUnavailableError, ConfigError

logger = logging.getLogger("emosdk")

FRAME_EXPECTED = "a frame (H, W) or (H, W, 1|3), uint8 or float in [0, 1]"


@dataclass(frozen=True)
class FaceBox:
    """A detected face in pixel coordinates of the frame.

    Attributes:
        x, y, w, h: the box.
        score: detector confidence (Haar has none: 1.0).
        left_eye, right_eye: eye centres in frame pixels (the subject's left/right as seen in
            the image: left_eye has the smaller x), or None when not found.
        track_id: stable identity across frames, set by :class:`FaceTracker`.
        keypoints: BlazeFace's six keypoints (6, 2) float32 in frame pixels, unclipped (right
            eye, left eye, nose tip, mouth centre, right and left ear tragion: the subject's
            sides), or None (Haar).
        landmarks: MediaPipe's 478 face landmarks (478, 3) float32 in frame pixels (z in the
            same scale, relative to the face centre), or None when not computed.
        presence: the landmark model's face-presence probability, or None.
        blendshapes: the 52 blendshape scores (52,) float32 in [0, 1] (names in
            :data:`emosdk.perception.landmarks.BLENDSHAPE_NAMES`), or None.

    The array fields take no part in ``==`` and ``hash``.
    """

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0
    left_eye: tuple[float, float] | None = None
    right_eye: tuple[float, float] | None = None
    track_id: int = 0
    keypoints: np.ndarray | None = field(default=None, compare=False, repr=False)
    landmarks: np.ndarray | None = field(default=None, compare=False, repr=False)
    presence: float | None = None
    blendshapes: np.ndarray | None = field(default=None, compare=False, repr=False)

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
        if color_order not in ("bgr", "rgb"):
            raise ConfigError(f"color_order: expected 'bgr' or 'rgb', got {color_order!r}")
        if not scale_factor > 1.0:
            raise ConfigError(f"scale_factor: expected a number > 1, got {scale_factor!r}")
        for name, v, lo in (
            ("min_size", min_size, 1),
            ("min_neighbors", min_neighbors, 0),
            ("max_side", max_side, 1),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{name}: expected an int >= {lo}, got {v!r}")
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
        self.name = f"OpenCV {cv2.__version__} Haar cascade"

    def close(self) -> None:
        """Nothing to release (the cascades are freed with the object)."""

    def _gray(self, image: np.ndarray) -> np.ndarray:
        # uint8 first: cvtColor has no float64 path (a float frame in [0, 1] would raise an
        # untyped cv2.error), and the cascade works on 8-bit grey anyway
        img = image
        if img.dtype != np.uint8:
            img = np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)
        if img.ndim == 3:
            if img.shape[2] == 3:
                img = self._cv2.cvtColor(np.ascontiguousarray(img), self._to_gray)
            else:
                img = img[..., 0]
        return np.ascontiguousarray(img)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in a frame, largest first (score 1.0; eye centres when the eye cascade finds
        both).

        Args:
            image: (H, W), (H, W, 1) or (H, W, 3), uint8 or float32/float64 in [0, 1].

        Raises:
            InputError: on a malformed frame; the message states the expected form.
        """
        gray = self._gray(_validate.image("image", image, FRAME_EXPECTED))
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


MEDIAPIPE_INSTALL = (
    'pip install "emosdk[mediapipe]" (mediapipe 0.10.21 on x86-64, 0.10.18 on aarch64; '
    "the 1.x wheels ship no face models)"
)


def _import_mediapipe_solutions():
    """mediapipe's legacy ``solutions`` package, or BackendUnavailableError saying why not."""
    try:
        import mediapipe as mp
    except Exception as e:  # ImportError, or a broken install (e.g. built against numpy 1.x)
        raise BackendUnavailableError(
            f"mediapipe is not importable ({type(e).__name__}: {e}); the mediapipe face "
            f"detector needs mediapipe 0.10.x: {MEDIAPIPE_INSTALL}"
        ) from e
    version = getattr(mp, "__version__", "?")
    try:
        solutions = mp.solutions
        solutions.face_detection.FaceDetection  # noqa: B018
    except Exception as e:
        raise BackendUnavailableError(
            f"mediapipe {version} has no mp.solutions.face_detection (mediapipe 1.x ships no "
            f"face models); the mediapipe face detector needs mediapipe 0.10.x: "
            f"{MEDIAPIPE_INSTALL}"
        ) from e
    return mp, solutions


def mediapipe_unavailable_reason() -> str | None:
    """Why the mediapipe detector cannot run here (``None`` when it can). Imports mediapipe."""
    try:
        _import_mediapipe_solutions()
    except BackendUnavailableError as e:
        return str(e)
    return None


class MediaPipeFaceDetector:
    """mediapipe's BlazeFace detector (``mp.solutions.face_detection``, mediapipe 0.10.x).

    Boxes come in frame pixels, clipped to the frame, with the detector's score; the eye centres
    come from BlazeFace's keypoints (``left_eye`` is the one with the smaller x, as in
    :class:`FaceBox`; ``None`` when an eye falls outside the frame). Not thread-safe: use one
    detector per thread. Release it with :meth:`close` or a ``with`` block.

    Args:
        model_selection: 0, the short-range model (faces within about 2 m, 128x128 input), or 1,
            the full-range model (up to about 5 m, 192x192 input).
        min_detection_confidence: score in [0, 1] a face needs to be reported.
        color_order: channel order of colour frames, ``"bgr"`` (OpenCV) or ``"rgb"``.

    Raises:
        BackendUnavailableError: mediapipe 0.10.x is not installed (the message says how to
            install it).
    """

    def __init__(
        self,
        model_selection: int = 0,
        min_detection_confidence: float = 0.5,
        color_order: str = "bgr",
    ) -> None:
        if model_selection not in (0, 1):
            raise ConfigError(
                f"model_selection: expected 0 (short range) or 1 (full range), "
                f"got {model_selection!r}"
            )
        if not 0.0 <= min_detection_confidence <= 1.0:
            raise ConfigError(
                f"min_detection_confidence: expected a value in [0, 1], "
                f"got {min_detection_confidence!r}"
            )
        if color_order not in ("bgr", "rgb"):
            raise ConfigError(f"color_order: expected 'bgr' or 'rgb', got {color_order!r}")
        mp, solutions = _import_mediapipe_solutions()
        self.version = getattr(mp, "__version__", "?")
        self.model_selection = model_selection
        self.color_order = color_order
        self.name = f"mediapipe {self.version} BlazeFace " + (
            "full-range" if model_selection else "short-range"
        )
        self._fd = solutions.face_detection.FaceDetection(
            model_selection=model_selection,
            min_detection_confidence=min_detection_confidence,
        )

    def __enter__(self) -> MediaPipeFaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the mediapipe graph and its threads. Safe to call twice."""
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            fd.close()

    def __del__(self) -> None:
        # the graph's threads hold it alive: without this, each dropped detector leaks them
        try:
            self.close()
        except Exception:
            pass

    def _rgb(self, image: np.ndarray) -> np.ndarray:
        img = image
        if img.dtype != np.uint8:
            img = np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        elif img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        else:
            img = img[..., :3]  # drop an alpha channel
            if self.color_order == "bgr":
                img = img[..., ::-1]
        return np.ascontiguousarray(img)

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        fd = self._fd
        if fd is None:
            raise BackendError("face detector: this MediaPipeFaceDetector is closed")
        image = _validate.image("image", image, FRAME_EXPECTED)
        h, w = image.shape[:2]
        found = fd.process(self._rgb(image)).detections or []
        boxes = []
        for det in found:
            loc = det.location_data
            rb = loc.relative_bounding_box
            x0 = min(max(round(rb.xmin * w), 0), w)
            y0 = min(max(round(rb.ymin * h), 0), h)
            x1 = min(max(round((rb.xmin + rb.width) * w), 0), w)
            y1 = min(max(round((rb.ymin + rb.height) * h), 0), h)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue  # (almost) entirely outside the frame
            eyes = [(k.x * w, k.y * h) for k in list(loc.relative_keypoints)[:2]]
            left = right = None
            if len(eyes) == 2 and all(0 <= ex < w and 0 <= ey < h for ex, ey in eyes):
                left, right = sorted(eyes)  # BlazeFace's "right eye" is the image-left one
            score = float(det.score[0]) if len(det.score) else 1.0
            boxes.append(FaceBox(x0, y0, x1 - x0, y1 - y0, score, left, right))
        boxes.sort(key=lambda b: b.area, reverse=True)
        return boxes


DEFAULT_MODELS = Path(__file__).resolve().parents[1] / "models" / "bundled" / "default"
#: What :func:`create_face_detector` builds (``RecognizerConfig.face_detector`` lists those the
#: recognizer offers).
DETECTOR_KINDS = tuple(dict.fromkeys(("auto", "blazeface", *FACE_DETECTORS)))


def create_face_detector(
    kind: str = "auto",
    color_order: str = "bgr",
    models: str | Path | None = None,
    *,
    detector_model: str | Path | bool | None = None,
    small_faces: str = "auto",
) -> FaceDetector:
    """The face detector ``kind`` names: ``"auto"``, ``"blazeface"``, ``"mediapipe"``, ``"haar"``.

    - ``"blazeface"``: :class:`~emosdk.perception.blazeface.BlazeFaceDetector`, MediaPipe's
      BlazeFace on ONNX Runtime, from ``detector_model`` (a checked file, as the Recognizer
      passes from its bundle), else ``face_detector.onnx`` in ``models`` (default: the
      bundled default model's folder). Needs nothing beyond the runtime.
    - ``"auto"``: BlazeFace when its ONNX file is there, else mediapipe 0.10.x when it imports,
      else OpenCV's Haar cascade; the choice and the reason are logged (logger ``emosdk``,
      INFO) and the detector's ``name`` says which one runs. ``detector_model=False`` says
      there is no BlazeFace graph (no folder is searched).
    - ``"mediapipe"``: :class:`MediaPipeFaceDetector` (the ``mediapipe`` extra).
    - ``"haar"``: :class:`HaarFaceDetector` (the ``capture`` extra).

    ``small_faces`` is BlazeFace's (``"always"`` suits several faces per frame).

    Raises:
        ConfigError: ``kind`` is not one of :data:`DETECTOR_KINDS`.
        BackendUnavailableError: the named detector (or, for ``"auto"``, none) can run here.
        ModelError: ``"blazeface"`` and its ONNX file is missing or broken.
    """
    if kind not in DETECTOR_KINDS:
        raise ConfigError(f"face_detector: expected one of {DETECTOR_KINDS}, got {kind!r}")
    folder = Path(models) if models is not None else DEFAULT_MODELS
    if detector_model is None:
        onnx_path: Path | None = folder / "face_detector.onnx"
        where = f"it is in {folder}"
    elif detector_model is False:
        onnx_path, where = None, ""
    else:
        onnx_path, where = Path(detector_model), "the model's perception graph"
    if kind == "blazeface" and onnx_path is None:
        raise BackendUnavailableError(
            "face_detector='blazeface' needs the BlazeFace graph (face_detector.onnx), which "
            "neither this model bundle nor the bundled default model has"
        )
    if kind == "blazeface" or (kind == "auto" and onnx_path is not None and onnx_path.is_file()):
        from .blazeface import BlazeFaceDetector

        det = BlazeFaceDetector(onnx_path, color_order=color_order, small_faces=small_faces)
        why = "requested" if kind == "blazeface" else f"auto: {where}"
        logger.info("face detector: %s (%s)", det.name, why)
        return det
    if kind in ("auto", "mediapipe"):
        try:
            det = MediaPipeFaceDetector(color_order=color_order)
        except Exception as e:
            if kind == "mediapipe":
                raise
            if isinstance(e, BackendUnavailableError):
                logger.info("face detector: OpenCV Haar cascade (auto: no BlazeFace graph; %s)", e)
            else:  # installed but failed to start: say so louder
                logger.warning(
                    "face detector: OpenCV Haar cascade (auto: mediapipe failed to start: %s: %s)",
                    type(e).__name__,
                    e,
                )
        else:
            why = "requested" if kind == "mediapipe" else "auto: mediapipe is installed"
            logger.info("face detector: %s (%s)", det.name, why)
            return det
    try:
        haar = HaarFaceDetector(color_order=color_order)
    except BackendUnavailableError as e:
        if kind == "auto":  # no detector can run: name the ways out
            raise BackendUnavailableError(
                f"{e}; or mediapipe's: {MEDIAPIPE_INSTALL}; or a model bundle with its BlazeFace "
                "graph (face_detector.onnx)"
            ) from e
        raise
    if kind == "haar":
        logger.info("face detector: %s (requested)", haar.name)
    return haar


def crop(image: np.ndarray, box: FaceBox, margin: float = 0.1) -> np.ndarray:
    """Square crop around ``box`` enlarged by ``margin`` of its side, clipped to the frame."""
    side = int(round(max(box.w, box.h) * (1 + 2 * margin)))
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    # the square centred on the box, then clipped on every side alike (at the left or top edge
    # it must not slide into the frame, off the face's centre)
    x1, y1 = min(image.shape[1], x0 + side), min(image.shape[0], y0 + side)
    x0, y0 = max(0, x0), max(0, y0)
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def align(
    image: np.ndarray,
    box: FaceBox,
    margin: float = 0.1,
    eye_line: float | None = None,
    eye_distance: float | None = None,
) -> np.ndarray:
    """A square face crop with the eyes levelled (rotation about the eye midpoint).

    By default the crop is :func:`crop`'s square (the box's longer side enlarged by ``margin``
    on each side, centred on the box); with ``eye_line`` and ``eye_distance`` it is framed on
    the eyes instead, as the face encoder's training faces were (FER2013: the eye midpoint at
    (0.5, 0.39) of the side, the eyes 0.345 of the side apart). It is taken from the frame
    rotated so that the eye line is level, sampled directly (bilinear, edge pixels replicated
    beyond the frame), in the frame's dtype, channels and channel order, so nothing but the crop
    is rotated. Without both eye centres, or with an implausible tilt over 30 degrees, this is
    :func:`crop`.
    """
    if box.left_eye is None or box.right_eye is None:
        return crop(image, box, margin)
    (lx, ly), (rx, ry) = box.left_eye, box.right_eye
    theta = math.atan2(ry - ly, rx - lx)
    if abs(math.degrees(theta)) > 30:
        return crop(image, box, margin)
    ex, ey = (lx + rx) / 2, (ly + ry) / 2
    if eye_line is not None and eye_distance is not None:
        side = max(8, int(round(math.hypot(rx - lx, ry - ly) / eye_distance)))
        bx, by = 0.0, (0.5 - eye_line) * side  # the centre, in the levelled eye frame
        c, s = math.cos(theta), math.sin(theta)
        return rotated_crop(image, ex + c * bx - s * by, ey + s * bx + c * by, side, theta)
    side = int(round(max(box.w, box.h) * (1 + 2 * margin)))
    bx, by = box.x + box.w / 2 - ex, box.y + box.h / 2 - ey
    c, s = math.cos(theta), math.sin(theta)
    return rotated_crop(image, ex + c * bx - s * by, ey + s * bx + c * by, side, theta)


def rotated_crop(
    image: np.ndarray,
    cx: float,
    cy: float,
    side: int,
    theta: float,
    use_opencv: bool | None = None,
) -> np.ndarray:
    """The ``side`` x ``side`` square centred on (cx, cy) of the frame rotated by ``theta``
    (radians) about that centre: bilinear, edges replicated, in the frame's dtype, channels and
    channel order.

    OpenCV's ``warpAffine`` does it where OpenCV imports (about 0.05 ms), numpy elsewhere
    (about 0.9 ms for a 130 px crop); on uint8 they differ by 2 grey levels at most (0.08 on
    average: OpenCV interpolates in fixed point)
    (``use_opencv`` forces one, for tests).
    """
    from ._sampling import Rect, sample_native

    cv2 = None
    if use_opencv is not False:
        try:
            import cv2
        except ImportError:
            if use_opencv:
                raise
    if cv2 is None:
        return sample_native(image, Rect(cx, cy, side, side, theta), (side, side))
    c, s = math.cos(theta), math.sin(theta)
    h = side / 2
    # destination pixel (u, v) reads the frame at centre + R(theta) @ (u - side/2, v - side/2)
    m = np.array([[c, -s, cx - c * h + s * h], [s, c, cy - s * h - c * h]], np.float64)
    out = cv2.warpAffine(
        image,
        m,
        (side, side),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    if image.ndim == 3 and out.ndim == 2:
        out = out[..., None]  # OpenCV drops a single channel
    return np.ascontiguousarray(out)


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
