"""BlazeFace short-range (MediaPipe's face detector) on ONNX Runtime, decoded in numpy.

The graph is ``face_detector.onnx`` of the default bundle, converted once from MediaPipe's
``face_detector.tflite`` (Face Landmarker float16/1, Apache-2.0) by tools/convert_mediapipe.py.
Everything around the graph follows MediaPipe's ``face_detection_short_range`` graph:

- input: the frame letterboxed into 128x128 RGB in [-1, 1] (the longer side fills the input,
  the rest is black), sampled bilinearly as MediaPipe's CPU ``ImageToTensor`` does;
- 896 SSD anchors (strides 8, 16, 16, 16; two anchors per cell at stride 8, six at 16; fixed
  size 1), box offsets and six keypoints per anchor scaled by 128;
- score = sigmoid of the logit (clipped to +-100), kept above ``min_score`` (0.5);
- weighted non-maximum suppression (IoU > 0.3 merges, score-weighted mean of boxes and
  keypoints, the best score kept).

Keypoints, in MediaPipe's order: 0 right eye, 1 left eye (the subject's: the right eye is on the
image's left in a frontal, unmirrored view), 2 nose tip, 3 mouth centre, 4 right ear tragion,
5 left ear tragion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BackendError, ConfigError, InputError
from ._onnx import check_io, open_session
from ._sampling import Rect, check_frame, sample
from .face import FaceBox

logger = logging.getLogger("emosdk")

INPUT_SIZE = 128
NUM_ANCHORS = 896
NUM_KEYPOINTS = 6
KEYPOINT_NAMES = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_center",
    "right_ear_tragion",
    "left_ear_tragion",
)
INPUT_NAME = "image"
SMALL_FACES = ("auto", "always", "off")
OUTPUT_NAMES = ("regressors", "classificators")


def ssd_anchors(
    input_size: int = INPUT_SIZE, strides: tuple[int, ...] = (8, 16, 16, 16)
) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1], MediaPipe's ``SsdAnchorsCalculator`` order.

    Consecutive layers with the same stride share one feature map; each layer adds two anchors
    per cell (aspect ratio 1 and the interpolated scale), and with a fixed anchor size only the
    centres matter.
    """
    centres = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        per_cell = 2 * (j - i)
        n = int(np.ceil(input_size / strides[i]))
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        cell = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cell, per_cell, axis=0))
        i = j
    return np.concatenate(centres).astype(np.float32)


ANCHORS = ssd_anchors()


@dataclass(frozen=True)
class Detection:
    """One raw detection in frame pixels (floats, not clipped).

    Attributes:
        box: (xmin, ymin, xmax, ymax).
        keypoints: (6, 2) float32, MediaPipe's keypoint order (see :data:`KEYPOINT_NAMES`).
        score: detector confidence in [0, 1].
    """

    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    score: float


def letterbox_rect(height: int, width: int) -> Rect:
    """The square region of the frame (longer side, centred) that fills the detector input."""
    side = float(max(height, width))
    return Rect(width / 2.0, height / 2.0, side, side, 0.0)


def tile_rects(height: int, width: int, grid: int = 2, overlap: float = 0.25) -> list[Rect]:
    """Square tiles covering the frame, ``grid`` x ``grid`` on the longer side's square, each
    ``1 + overlap`` times the grid step: read at 128x128 they magnify faces ``grid / (1 +
    overlap)`` times (1.6x for 2x2) compared with the letterboxed frame.

    Raises:
        InputError: ``grid`` is not an int >= 1.
    """
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise InputError(f"grid: expected an int >= 1, got {grid!r}")
    side = max(height, width)
    tile = side / grid * (1.0 + overlap)
    x0, y0 = width / 2 - side / 2, height / 2 - side / 2
    if grid == 1:  # one tile on the square's centre
        centres = [side / 2]
    else:
        centres = [tile / 2 + i * (side - tile) / (grid - 1) for i in range(grid)]
    rects = []
    for cy in centres:
        for cx in centres:
            r = Rect(x0 + cx, y0 + cy, tile, tile, 0.0)
            # skip tiles that lie (almost) entirely in the letterbox padding
            if r.cx + tile / 2 > 0.1 * tile and r.cx - tile / 2 < width - 0.1 * tile:
                if r.cy + tile / 2 > 0.1 * tile and r.cy - tile / 2 < height - 0.1 * tile:
                    rects.append(r)
    return rects


def preprocess(
    image: np.ndarray, color_order: str = "bgr", rect: Rect | None = None
) -> tuple[np.ndarray, Rect]:
    """The detector's input (1, 128, 128, 3) float32 RGB in [-1, 1] for ``rect`` (default: the
    letterboxed frame), and the rect."""
    rect = letterbox_rect(*image.shape[:2]) if rect is None else rect
    x = sample(
        image,
        rect,
        (INPUT_SIZE, INPUT_SIZE),
        color_order=color_order,
        value_range=(-1.0, 1.0),
        border="zero",
    )
    return x[None], rect


def decode(
    regressors: np.ndarray,
    classificators: np.ndarray,
    rect: Rect,
    min_score: float = 0.5,
    iou_threshold: float = 0.3,
) -> list[Detection]:
    """Raw outputs -> detections in frame pixels, best first.

    Args:
        regressors: (1, 896, 16) float32: box centre offset, size, then six keypoints, in input
            pixels relative to each anchor.
        classificators: (1, 896, 1) float32 logits.
        rect: the letterbox rect of :func:`preprocess`.
        min_score: smallest score kept.
        iou_threshold: overlap above which detections are merged.
    """
    reg = np.asarray(regressors, np.float32).reshape(NUM_ANCHORS, 16)
    logits = np.clip(np.asarray(classificators, np.float32).reshape(NUM_ANCHORS), -100, 100)
    scores = 0.5 * (1.0 + np.tanh(0.5 * logits))  # sigmoid without overflow
    keep = np.nonzero(scores >= min_score)[0]
    if keep.size == 0:
        return []
    reg = reg[keep] / INPUT_SIZE
    anc = ANCHORS[keep]
    cx = reg[:, 0] + anc[:, 0]
    cy = reg[:, 1] + anc[:, 1]
    bw, bh = reg[:, 2], reg[:, 3]
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    kps = reg[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + anc[:, None, :]
    merged = weighted_nms(boxes, kps, scores[keep], iou_threshold)
    # normalised letterbox coordinates -> frame pixels
    x0, y0 = rect.cx - rect.width / 2, rect.cy - rect.height / 2
    out = []
    for box, kp, score in merged:
        b = (
            float(box[0] * rect.width + x0),
            float(box[1] * rect.height + y0),
            float(box[2] * rect.width + x0),
            float(box[3] * rect.height + y0),
        )
        k = (kp * np.float32([rect.width, rect.height]) + np.float32([x0, y0])).astype(np.float32)
        out.append(Detection(b, k, float(score)))
    return out


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression.

    The best remaining detection and every remaining one overlapping it by more than
    ``iou_threshold`` (itself included) are replaced by their score-weighted mean box and
    keypoints, with the best one's score.
    """
    order = np.argsort(-scores, kind="stable")
    out = []
    while order.size:
        top = order[0]
        overlap = _iou(boxes[top], boxes[order]) > iou_threshold
        group = order[overlap]
        w = scores[group][:, None]
        box = (boxes[group] * w).sum(0) / w.sum()
        kp = (keypoints[group] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kp, float(scores[top])))
        rest = order[~overlap]
        if rest.size == order.size:  # as MediaPipe: stop if nothing was taken
            break
        order = rest
    return out


def to_face_box(det: Detection, height: int, width: int) -> FaceBox | None:
    """A :class:`FaceBox` clipped to the frame (None when almost entirely outside it).

    The eye centres are the first two keypoints sorted by x (``left_eye`` has the smaller x),
    ``None`` when an eye falls outside the frame; ``keypoints`` keeps all six unclipped.
    """
    x0 = min(max(round(det.box[0]), 0), width)
    y0 = min(max(round(det.box[1]), 0), height)
    x1 = min(max(round(det.box[2]), 0), width)
    y1 = min(max(round(det.box[3]), 0), height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    eyes = [(float(x), float(y)) for x, y in det.keypoints[:2]]
    left = right = None
    if all(0 <= ex < width and 0 <= ey < height for ex, ey in eyes):
        left, right = sorted(eyes)
    return FaceBox(x0, y0, x1 - x0, y1 - y0, det.score, left, right, keypoints=det.keypoints.copy())


class BlazeFaceDetector:
    """MediaPipe's BlazeFace short-range detector on ONNX Runtime (a :class:`FaceDetector`).

    Stateless apart from its ONNX Runtime session, whose ``run`` is safe to call from several
    threads at once: one detector may serve several streams and threads. Tracking lives in
    :class:`~emosdk.perception.landmarks.FaceMeshTracker`, one per stream.

    Args:
        model_path: ``face_detector.onnx`` (input ``image`` (1, 128, 128, 3), outputs
            ``regressors`` (1, 896, 16) and ``classificators`` (1, 896, 1)).
        min_score: score in [0, 1] a face needs (MediaPipe's default 0.5).
        iou_threshold: overlap in (0, 1) above which detections merge (MediaPipe: 0.3).
        color_order: channel order of colour frames, ``"bgr"`` (OpenCV) or ``"rgb"``.
        threads: ONNX Runtime intra-op threads.
        small_faces: when to look again in 2x2 overlapping tiles of the frame (1.6x magnified):
            ``"auto"`` when the letterboxed frame holds no face, ``"always"``, or ``"off"``.
            The short-range model misses faces under about 13 px of its 128 px input (under
            45 px in a 480x360 frame, 90 px in a 960x360 one); the tiles find them down to
            about 35 px in 480x360, for four more graph runs (about 9 ms) per frame that
            needs them. ``"always"`` suits wide scenes with several people.

    Raises:
        ConfigError: an option is out of range.
        ModelError: the file is missing or is not the detector graph.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        min_score: float = 0.5,
        iou_threshold: float = 0.3,
        color_order: str = "bgr",
        threads: int = 1,
        small_faces: str = "auto",
    ) -> None:
        _check_options(min_score=min_score, color_order=color_order, threads=threads)
        if small_faces not in SMALL_FACES:
            raise ConfigError(
                f"small_faces: expected 'auto', 'always' or 'off', got {small_faces!r}"
            )
        self.small_faces = small_faces
        if not 0.0 < iou_threshold < 1.0:
            raise ConfigError(f"iou_threshold: expected a value in (0, 1), got {iou_threshold!r}")
        self.model_path = Path(model_path)
        self.min_score = float(min_score)
        self.iou_threshold = float(iou_threshold)
        self.color_order = color_order
        self._session = open_session(self.model_path, "face detector", threads)
        check_io(
            self._session,
            "face detector",
            self.model_path,
            {INPUT_NAME: [1, INPUT_SIZE, INPUT_SIZE, 3]},
            OUTPUT_NAMES,
        )
        self.name = "BlazeFace short-range (ONNX Runtime)"

    def close(self) -> None:
        """Drop the session. Safe to call twice."""
        self._session = None

    def __enter__(self) -> BlazeFaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The raw graph: (1, 128, 128, 3) float32 -> (regressors, classificators).

        Raises:
            BackendError: the detector is closed.
        """
        session = self._session  # once: close() from another thread cannot pull it away
        if session is None:
            raise BackendError("face detector: this BlazeFaceDetector is closed")
        reg, cls = session.run(list(OUTPUT_NAMES), {INPUT_NAME: tensor})
        return reg, cls

    def detections(self, image: np.ndarray, small_faces: str | None = None) -> list[Detection]:
        """Raw detections in frame pixels, best score first (see :func:`decode`).

        Args:
            image: a frame, as for :meth:`detect`.
            small_faces: overrides the detector's ``small_faces`` for this call (the tracker
                passes ``"always"`` while it looks for more than one face).

        Raises:
            InputError: ``image`` is not a frame :func:`emosdk._validate.image` accepts, or
                ``small_faces`` is not one of its values.
        """
        if small_faces not in (None, *SMALL_FACES):
            raise InputError(
                f"small_faces: expected 'auto', 'always', 'off' or None, got {small_faces!r}"
            )
        return self._detections(check_frame(image), small_faces)

    def _detections(self, image: np.ndarray, small_faces: str | None = None) -> list[Detection]:
        mode = self.small_faces if small_faces is None else small_faces
        tensor, rect = preprocess(image, self.color_order)
        reg, cls = self.run(tensor)
        found = decode(reg, cls, rect, self.min_score, self.iou_threshold)
        if mode == "off" or (found and mode == "auto"):
            return found
        h, w = image.shape[:2]
        for r in tile_rects(h, w):
            reg, cls = self.run(preprocess(image, self.color_order, r)[0])
            found += decode(reg, cls, r, self.min_score, self.iou_threshold)
        if len(found) < 2:
            return found
        # a face cut by two tiles is found twice: merge as within one pass
        merged = weighted_nms(
            np.array([d.box for d in found], np.float32),
            np.stack([d.keypoints for d in found]),
            np.array([d.score for d in found], np.float32),
            self.iou_threshold,
        )
        return [Detection(tuple(map(float, b)), k.astype(np.float32), s) for b, k, s in merged]

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in a frame, largest first, with score, eye centres and six keypoints.

        Args:
            image: (H, W), (H, W, 1) or (H, W, 3), uint8 or float32/float64 in [0, 1].

        Raises:
            InputError: on a malformed frame (wrong type, dtype, rank, channels, empty,
                non-finite or out-of-range values); the message states the expected form.
        """
        image = check_frame(image)
        h, w = image.shape[:2]
        boxes = [b for d in self._detections(image) if (b := to_face_box(d, h, w)) is not None]
        boxes.sort(key=lambda b: b.area, reverse=True)
        return boxes


def _check_options(**kw) -> None:
    if "min_score" in kw and not 0.0 <= kw["min_score"] <= 1.0:
        raise ConfigError(f"min_score: expected a value in [0, 1], got {kw['min_score']!r}")
    if "color_order" in kw and kw["color_order"] not in ("bgr", "rgb"):
        raise ConfigError(f"color_order: expected 'bgr' or 'rgb', got {kw['color_order']!r}")
    t = kw.get("threads", 1)
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ConfigError(f"threads: expected an int >= 1, got {t!r}")
