"""MediaPipe's 478 face landmarks and 52 blendshapes on ONNX Runtime, and a per-stream tracker.

The graphs are ``face_landmarks.onnx`` and ``face_blendshapes.onnx`` of the default bundle,
converted once from MediaPipe's Face Landmarker (float16/1, Apache-2.0) by
tools/convert_mediapipe.py. The geometry follows MediaPipe's face landmarker graph:

- the face region is a rotated square: from a BlazeFace detection, the box centre, rotated so
  that the eye keypoints (0 -> 1) are level, side 1.5x the longer box side; from landmarks (when
  tracking), the landmarks' bounding box centre, rotated by the eye corners 33 -> 263, side 1.5x
  its longer side;
- the landmark model reads that square as 256x256 RGB in [0, 1] and returns 478 (x, y, z) in
  input pixels, a face-presence logit (``presence``, sigmoid applied here) and an unused score;
- the blendshape model reads 146 of the landmarks (x, y in frame pixels) and returns 52
  scores in [0, 1].

Per-frame cost on one core (benchmarks/perception_bench.py): see docs/face.md.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import BackendError, ConfigError, InputError
from ._onnx import check_io, open_session
from ._sampling import Rect, check_frame, sample
from .blazeface import BlazeFaceDetector, _check_options
from .face import FaceBox

LANDMARK_INPUT = 256
NUM_LANDMARKS = 478
ROI_SCALE = 1.5
LANDMARK_INPUT_NAME = "image"
LANDMARK_OUTPUTS = ("landmarks", "presence")
BLENDSHAPE_INPUT_NAME = "points"
BLENDSHAPE_OUTPUT = "blendshapes"

# the subject's eye corners (right eye's outer corner, left eye's outer corner) and iris centres
RIGHT_EYE_CORNER, LEFT_EYE_CORNER = 33, 263
RIGHT_IRIS, LEFT_IRIS = 468, 473

#: The 146 landmarks the blendshape model reads (MediaPipe's ``kLandmarksSubsetIdxs``).
BLENDSHAPE_LANDMARKS = np.array(
    [0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65,
     66, 67, 70, 78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136,
     144, 145, 146, 148, 149, 150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168,
     172, 173, 176, 178, 181, 185, 191, 195, 197, 234, 246, 249, 251, 263, 267, 269, 270, 276,
     282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318,
     321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380,
     381, 382, 384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466,
     468, 469, 470, 471, 472, 473, 474, 475, 476, 477],
    dtype=np.int64,
)  # fmt: skip

#: The 52 blendshape names in output order (ARKit's, with MediaPipe's ``_neutral`` first).
BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)  # fmt: skip


def _normalize_radians(a: float) -> float:
    return a - 2 * math.pi * math.floor((a + math.pi) / (2 * math.pi))


def _roi(
    xmin: float, ymin: float, xmax: float, ymax: float, p0: np.ndarray, p1: np.ndarray
) -> Rect:
    """MediaPipe's DetectionsToRects (rotation from p0 -> p1 levelled) + RectTransformation
    (square on the long side, scaled by 1.5), all in frame pixels."""
    rotation = _normalize_radians(-math.atan2(-(p1[1] - p0[1]), p1[0] - p0[0]))
    side = max(xmax - xmin, ymax - ymin) * ROI_SCALE
    return Rect((xmin + xmax) / 2, (ymin + ymax) / 2, side, side, rotation)


def roi_from_keypoints(box: tuple[float, float, float, float], keypoints: np.ndarray) -> Rect:
    """The landmark model's region from a BlazeFace box (xmin, ymin, xmax, ymax) and keypoints."""
    return _roi(*box, keypoints[0], keypoints[1])


def roi_from_landmarks(landmarks: np.ndarray) -> Rect:
    """The landmark model's region for the next frame from this frame's landmarks (tracking)."""
    lo = landmarks[:, :2].min(axis=0)
    hi = landmarks[:, :2].max(axis=0)
    return _roi(
        float(lo[0]),
        float(lo[1]),
        float(hi[0]),
        float(hi[1]),
        landmarks[RIGHT_EYE_CORNER],
        landmarks[LEFT_EYE_CORNER],
    )


def roi_from_box(box: FaceBox) -> Rect:
    """The landmark model's region for a :class:`FaceBox` (needs BlazeFace's ``keypoints``,
    else an unrotated square on the box, or landmarks, which take precedence)."""
    if box.landmarks is not None:
        return roi_from_landmarks(box.landmarks)
    corners = (box.x, box.y, box.x + box.w, box.y + box.h)
    if box.keypoints is not None:
        return roi_from_keypoints(corners, box.keypoints)
    side = max(box.w, box.h) * ROI_SCALE
    return Rect(box.x + box.w / 2, box.y + box.h / 2, side, side, 0.0)


@dataclass(frozen=True)
class FaceMesh:
    """The landmark model's result on one region.

    Attributes:
        landmarks: (478, 3) float32 in frame pixels (z: depth in the same scale, relative).
        presence: probability in [0, 1] that the region holds a face.
        roi: the region the model read.
    """

    landmarks: np.ndarray
    presence: float
    roi: Rect


class FaceLandmarker:
    """MediaPipe's face landmark model (478 points) and blendshape model on ONNX Runtime.

    Stateless apart from its ONNX Runtime sessions (safe to call from several threads).

    Args:
        landmark_model: ``face_landmarks.onnx`` (input ``image`` (N, 256, 256, 3), outputs
            ``landmarks`` (N, 1, 1, 1434) and ``presence`` (N, 1, 1, 1) logits).
        blendshape_model: ``face_blendshapes.onnx`` (input ``points`` (1, 146, 2), output
            ``blendshapes`` (52,)), or None for landmarks only.
        color_order: channel order of colour frames, ``"bgr"`` or ``"rgb"``.
        threads: ONNX Runtime intra-op threads per graph.

    Raises:
        ConfigError: an option is out of range.
        ModelError: a file is missing or is not the expected graph.
    """

    def __init__(
        self,
        landmark_model: str | Path,
        blendshape_model: str | Path | None = None,
        *,
        color_order: str = "bgr",
        threads: int = 1,
    ) -> None:
        _check_options(color_order=color_order, threads=threads)
        self.color_order = color_order
        self.landmark_model = Path(landmark_model)
        self._lm = open_session(self.landmark_model, "face landmark model", threads)
        check_io(
            self._lm,
            "face landmark model",
            self.landmark_model,
            {LANDMARK_INPUT_NAME: [None, LANDMARK_INPUT, LANDMARK_INPUT, 3]},
            LANDMARK_OUTPUTS,
        )
        self.blendshape_model = None if blendshape_model is None else Path(blendshape_model)
        self._bs = None
        if self.blendshape_model is not None:
            self._bs = open_session(self.blendshape_model, "blendshape model", threads)
            check_io(
                self._bs,
                "blendshape model",
                self.blendshape_model,
                {BLENDSHAPE_INPUT_NAME: [1, len(BLENDSHAPE_LANDMARKS), 2]},
                (BLENDSHAPE_OUTPUT,),
            )

    @property
    def has_blendshapes(self) -> bool:
        return self._bs is not None

    def close(self) -> None:
        """Drop the sessions. Safe to call twice."""
        self._lm = self._bs = None

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw graphs (the conversion tool swaps these for the TFLite reference) ----------------

    def run_landmarks(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 256, 256, 3) float32 -> raw landmarks (N, 1434) in input pixels, presence logits
        (N,).

        Raises:
            BackendError: the landmarker is closed.
        """
        session = self._lm  # once: close() from another thread cannot pull it away
        if session is None:
            raise BackendError("face landmark model: this FaceLandmarker is closed")
        lm, pres = session.run(list(LANDMARK_OUTPUTS), {LANDMARK_INPUT_NAME: tensor})
        return lm.reshape(len(tensor), -1), pres.reshape(len(tensor))

    def run_blendshapes(self, points: np.ndarray) -> np.ndarray:
        """(1, 146, 2) float32 landmark subset in frame pixels -> (52,) scores.

        Raises:
            ConfigError: the landmarker was made without a blendshape model.
            BackendError: the landmarker is closed.
        """
        if self.blendshape_model is None:
            raise ConfigError(
                "blendshapes need the blendshape model: pass blendshape_model= to FaceLandmarker"
            )
        session = self._bs
        if session is None:
            raise BackendError("blendshape model: this FaceLandmarker is closed")
        return session.run([BLENDSHAPE_OUTPUT], {BLENDSHAPE_INPUT_NAME: points})[0].reshape(-1)

    # -- the pipeline -------------------------------------------------------------------------

    def preprocess(self, image: np.ndarray, roi: Rect) -> np.ndarray:
        """The landmark model's input for one region: (256, 256, 3) float32 RGB in [0, 1]."""
        return sample(
            image,
            roi,
            (LANDMARK_INPUT, LANDMARK_INPUT),
            color_order=self.color_order,
            value_range=(0.0, 1.0),
            border="replicate",
        )

    def mesh(self, image: np.ndarray, rois: list[Rect]) -> list[FaceMesh]:
        """Landmarks on each region of one frame (one batched call).

        Raises:
            InputError: ``image`` is not a valid frame.
        """
        image = check_frame(image)
        if not rois:
            return []
        batch = np.stack([self.preprocess(image, r) for r in rois])
        raw, logits = self.run_landmarks(batch)
        out = []
        for r, lm, logit in zip(rois, raw, logits):
            pts = r.to_frame(lm.reshape(NUM_LANDMARKS, 3), (LANDMARK_INPUT, LANDMARK_INPUT))
            presence = float(1.0 / (1.0 + math.exp(-float(np.clip(logit, -60, 60)))))
            out.append(FaceMesh(pts, presence, r))
        return out

    def blendshapes(self, landmarks: np.ndarray) -> np.ndarray:
        """52 blendshape scores (float32 in [0, 1]) from (478, >=2) landmarks in frame pixels.

        Raises:
            InputError: ``landmarks`` is not (478, 2|3).
            ConfigError: the landmarker was made without a blendshape model.
        """
        lm = np.asarray(landmarks, np.float32)
        if lm.ndim != 2 or lm.shape[0] != NUM_LANDMARKS or lm.shape[1] < 2:
            raise InputError(
                f"landmarks: expected an array (478, 2|3) in frame pixels, got shape {lm.shape}"
            )
        points = np.ascontiguousarray(lm[BLENDSHAPE_LANDMARKS, :2][None])
        return np.clip(self.run_blendshapes(points), 0.0, 1.0).astype(np.float32)

    def refine(self, image: np.ndarray, box: FaceBox, blendshapes: bool = True) -> FaceBox:
        """``box`` with landmarks, presence, eyes from the irises (and blendshapes).

        The box's region comes from its landmarks if it has them, else from BlazeFace's
        keypoints (see :func:`roi_from_box`).
        """
        mesh = self.mesh(image, [roi_from_box(box)])[0]
        return self._box_from_mesh(mesh, box, image.shape[:2], blendshapes)

    def _box_from_mesh(
        self, mesh: FaceMesh, like: FaceBox, hw: tuple[int, int], blendshapes: bool
    ) -> FaceBox:
        h, w = hw
        lm = mesh.landmarks
        eyes = sorted((float(p[0]), float(p[1])) for p in lm[[RIGHT_IRIS, LEFT_IRIS], :2])
        left, right = eyes if all(0 <= x < w and 0 <= y < h for x, y in eyes) else (None, None)
        bs = self.blendshapes(lm) if blendshapes and self._bs is not None else None
        return replace(
            like,
            left_eye=left,
            right_eye=right,
            landmarks=lm,
            presence=mesh.presence,
            blendshapes=bs,
        )


class FaceMeshTracker:
    """MediaPipe-style face tracking for ONE stream: landmarks follow the face, and the detector
    runs only when fewer than ``max_faces`` faces are tracked (at the start, or when the landmark
    model's presence on a tracked region drops below ``min_presence``).

    With ``max_faces`` > 1 the detector also searches its 2x2 tiles (faces under 13 px of its
    input, e.g. two people side by side in a 960x360 frame), as long as fewer faces than
    ``max_faces`` are tracked: like MediaPipe, the detector then runs on every frame.

    A :class:`FaceDetector` (``detect(image)`` -> boxes, largest first) whose boxes carry
    ``landmarks``, ``presence``, ``blendshapes`` (when enabled) and ``track_id``; each box is
    the landmarks' bounding box clipped to the frame, its eyes the iris centres.

    State: the tracked regions. Not meant to be shared between streams: make one per stream
    (they can share one detector and one landmarker) and :meth:`reset` it when the stream
    restarts. Calls are serialised by a lock, so a tracker used from two threads stays
    consistent, but frames from two streams would still mix their faces.

    Args:
        detector: the BlazeFace detector (shared, stateless).
        landmarker: the landmark (and blendshape) models (shared, stateless).
        max_faces: faces tracked at once (1 to 16).
        min_presence: presence in [0, 1] below which a track is dropped (MediaPipe: 0.5).
        blendshapes: also compute blendshapes (needs the landmarker's blendshape model).
        min_iou: a new detection overlapping a tracked face's box by more than this is the
            same face (MediaPipe's association threshold: 0.5).

    Raises:
        ConfigError: an option is out of range or blendshapes are asked without their model.
    """

    def __init__(
        self,
        detector: BlazeFaceDetector,
        landmarker: FaceLandmarker,
        *,
        max_faces: int = 1,
        min_presence: float = 0.5,
        blendshapes: bool = True,
        min_iou: float = 0.5,
    ) -> None:
        if (
            isinstance(max_faces, bool)
            or not isinstance(max_faces, int)
            or not 1 <= max_faces <= 16
        ):
            raise ConfigError(f"max_faces: expected an int in [1, 16], got {max_faces!r}")
        if not 0.0 <= min_presence <= 1.0:
            raise ConfigError(f"min_presence: expected a value in [0, 1], got {min_presence!r}")
        if not 0.0 < min_iou < 1.0:
            raise ConfigError(f"min_iou: expected a value in (0, 1), got {min_iou!r}")
        if blendshapes and not landmarker.has_blendshapes:
            raise ConfigError(
                "blendshapes=True needs the landmarker's blendshape model "
                "(FaceLandmarker(..., blendshape_model=...)); or pass blendshapes=False"
            )
        self.detector = detector
        self.landmarker = landmarker
        self.max_faces = max_faces
        self.min_presence = float(min_presence)
        self.with_blendshapes = blendshapes
        self.min_iou = float(min_iou)
        self._lock = threading.Lock()
        self._tracks: list[tuple[int, Rect]] = []
        self._next_id = 0
        self.detector_runs = 0  # how often the detector ran (for benchmarks and tests)

    def reset(self) -> None:
        """Forget the tracked faces (e.g. when the stream restarts or the camera jumps)."""
        with self._lock:
            self._tracks = []
            self._next_id = 0
            self.detector_runs = 0

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in the next frame of the stream, largest first (see the class docstring).

        Raises:
            InputError: on a malformed frame.
        """
        image = check_frame(image)
        with self._lock:
            return self._step(image)

    process = detect

    def _step(self, image: np.ndarray) -> list[FaceBox]:
        h, w = image.shape[:2]
        faces: list[tuple[int, FaceMesh]] = []
        if self._tracks:
            meshes = self.landmarker.mesh(image, [r for _, r in self._tracks])
            faces = [
                (tid, m)
                for (tid, _), m in zip(self._tracks, meshes)
                if m.presence >= self.min_presence
            ]
        if len(faces) < self.max_faces:
            self.detector_runs += 1
            known = [_bbox(m.landmarks) for _, m in faces]
            new_rois = []
            # looking for several faces: the tiles too, or people further away are missed
            mode = "always" if self.max_faces > 1 else None
            for d in self.detector.detections(image, small_faces=mode):
                if len(faces) + len(new_rois) >= self.max_faces:
                    break
                if any(_box_iou(d.box, k) > self.min_iou for k in known):
                    continue  # already tracked
                new_rois.append(roi_from_keypoints(d.box, d.keypoints))
                known.append(d.box)
            for m in self.landmarker.mesh(image, new_rois):
                if m.presence >= self.min_presence:
                    faces.append((self._next_id, m))
                    self._next_id += 1
        self._tracks = [(tid, roi_from_landmarks(m.landmarks)) for tid, m in faces]
        out = []
        for tid, m in faces:
            x0, y0, x1, y1 = _bbox(m.landmarks)
            bx0, by0 = min(max(round(x0), 0), w), min(max(round(y0), 0), h)
            bx1, by1 = min(max(round(x1), 0), w), min(max(round(y1), 0), h)
            if bx1 - bx0 < 2 or by1 - by0 < 2:
                continue
            box = FaceBox(bx0, by0, bx1 - bx0, by1 - by0, m.presence, track_id=tid)
            out.append(self.landmarker._box_from_mesh(m, box, (h, w), self.with_blendshapes))
        out.sort(key=lambda b: b.area, reverse=True)
        return out


def _bbox(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    lo = landmarks[:, :2].min(axis=0)
    hi = landmarks[:, :2].max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
