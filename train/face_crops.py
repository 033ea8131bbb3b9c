"""Are FER2013's 48x48 faces framed like the runtime's crops? A measurement, to decide whether the
face encoder trains on FER2013 as it is or on FER2013 re-cropped through the runtime's detector.

The runtime (``emosdk.pipeline``) detects a face with BlazeFace, levels the eyes and cuts the
square of the box's longer side enlarged by ``margin`` on each side
(:func:`emosdk.perception.face.align`), then resizes it to 48x48 grey. This script measures the
face's geometry inside that crop, on:

* ``runtime``: every frame of the six real CREMA-D audio-visual clips (``cremad/av_clips``),
  cropped exactly as the runtime does;
* ``fer_as_is``: FER2013 faces as they are: each image is placed in the middle of a canvas three
  times its side (edges replicated), BlazeFace finds the face there, and the keypoints are
  expressed in the original 48x48 image;
* ``fer_recropped``: the same faces re-cropped the runtime's way on that canvas.

With ``--graph`` (repeatable), each face encoder's ``face_logits`` (argmax over the six project
labels) is also scored per frame on the six clips against their intended label, on the runtime's
crops and on ``fer_framed`` crops: the same frames cut around the eyes with FER2013's median
framing (eye line at ``FER_EYE_Y`` of the side, eyes ``FER_EYE_DIST`` of the side apart), the
crop this measurement recommends for the runtime. One actor and 379 frames: a sanity check, not
a benchmark.

For each it reports, in units of the crop side: the eye-line height, the distance between the
eyes, the mouth height, the detector box side, and the horizontal offset of the eye midpoint
from the centre (medians and 10th/90th percentiles); for ``fer_recropped`` also the share of the
crop that falls outside the original image (what the re-cropped faces must invent). It writes
JSON and a PNG montage: runtime crops, the same frames FER-framed, FER2013 as it is, FER2013
re-cropped.

    python -m train.face_crops --fer 600 --out-json docs/results/face_crops.json \\
        --montage docs/img/face_crops.png
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np

from . import data as D

logger = logging.getLogger("emosdk.train")

MARGIN = 0.1  # emosdk.perception.face.align's default, what the pipeline uses
FER_EYE_Y = 0.39  # FER2013 PublicTest medians measured by this script (docs/results.md)
FER_EYE_DIST = 0.345


def fer_framed(image: np.ndarray, box, eye_y: float = FER_EYE_Y, eye_dist: float = FER_EYE_DIST):
    """A square crop with the eyes level, ``eye_dist`` of the side apart, their midpoint at
    (0.5, ``eye_y``) of the side: FER2013's framing. None without both eyes."""
    import math

    import cv2

    if box.left_eye is None or box.right_eye is None:
        return None
    (lx, ly), (rx, ry) = box.left_eye, box.right_eye
    theta = math.atan2(ry - ly, rx - lx)
    d = math.hypot(rx - lx, ry - ly)
    side = max(8, int(round(d / eye_dist)))
    c, s = math.cos(theta), math.sin(theta)
    # crop (u, v) -> frame: R(theta) @ ((u, v) - (side/2, eye_y*side)) + eye midpoint
    ex, ey = (lx + rx) / 2, (ly + ry) / 2
    u0, v0 = side / 2, eye_y * side
    m = np.array([[c, -s, ex - c * u0 + s * v0], [s, c, ey - s * u0 - c * v0]])
    return cv2.warpAffine(image, m, (side, side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def geometry(box, crop_side: float, to_crop) -> dict:
    """Keypoint geometry of a detected face in the coordinates of one square crop.

    ``to_crop`` maps frame pixels (N, 2) to crop pixels; the result is in units of the side.
    """
    kp = to_crop(np.asarray(box.keypoints[:4], np.float64)) / crop_side
    eyes = kp[:2]
    return {
        "eye_y": float(eyes[:, 1].mean()),
        "eye_dist": float(np.linalg.norm(eyes[0] - eyes[1])),
        "mouth_y": float(kp[3, 1]),
        "eye_mid_dx": float(eyes[:, 0].mean() - 0.5),
        "box_side": float(max(box.w, box.h) / crop_side),
    }


def aligned_frame_map(box, margin: float = MARGIN):
    """(side, map) of :func:`emosdk.perception.face.align`'s crop: frame pixels -> crop pixels."""
    import math

    side = int(round(max(box.w, box.h) * (1 + 2 * margin)))
    (lx, ly), (rx, ry) = box.left_eye, box.right_eye
    theta = math.atan2(ry - ly, rx - lx)
    if abs(math.degrees(theta)) > 30:
        theta = 0.0
        centre = (box.x + box.w / 2, box.y + box.h / 2)
    else:
        ex, ey = (lx + rx) / 2, (ly + ry) / 2
        bx, by = box.x + box.w / 2 - ex, box.y + box.h / 2 - ey
        c, s = math.cos(theta), math.sin(theta)
        centre = (ex + c * bx - s * by, ey + s * bx + c * by)
    c, s = math.cos(theta), math.sin(theta)

    def to_crop(p: np.ndarray) -> np.ndarray:
        d = p - np.asarray(centre)
        # rotate by -theta: the crop's axes are the frame's rotated by theta
        return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], 1) + side / 2

    return side, to_crop


def summarise(rows: list[dict]) -> dict:
    """Median and 10th/90th percentiles of every key of ``rows``, and their number."""
    out: dict = {"n": len(rows)}
    for k in rows[0] if rows else []:
        v = np.array([r[k] for r in rows])
        out[k] = {q: round(float(np.percentile(v, p)), 4) for q, p in
                  (("p10", 10), ("median", 50), ("p90", 90))}  # fmt: skip
    return out


def score_clips(graphs: list[Path], faces: dict[str, list], labels: np.ndarray) -> dict:
    """Per-frame accuracy of each graph's face_logits (argmax over the six project labels) on
    each kind of crop of the six AV clips."""
    import onnxruntime as ort

    from . import FER_CLASSES, LABELS

    cols = [FER_CLASSES.index(c) for c in LABELS]
    out = {}
    for g in graphs:
        sess = ort.InferenceSession(str(g), providers=["CPUExecutionProvider"])
        out[str(g)] = {}
        for kind, crops in faces.items():
            logits = sess.run(["face_logits"], {"face": np.stack(crops)})[0]
            pred = logits[:, cols].argmax(-1)
            per_clip = {LABELS[c]: round(float((pred[labels == c] == c).mean()), 3)
                        for c in sorted(set(labels.tolist()))}  # fmt: skip
            out[str(g)][kind] = {"accuracy": round(float((pred == labels).mean()), 4),
                                 "per_clip": per_clip}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict:
    import cv2

    from emosdk.features.face import FaceParams, normalize_face
    from emosdk.perception.face import align, create_face_detector

    from .corpora import load_cremad_av_clips

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fer", type=int, default=600, help="FER2013 PublicTest faces to measure")
    p.add_argument("--data-root", type=Path, default=D.DATA_ROOT)
    p.add_argument("--out-json", type=Path)
    p.add_argument("--montage", type=Path)
    p.add_argument("--graph", type=Path, action="append", default=[], help="face encoder ONNX")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    det = create_face_detector("blazeface")
    params = FaceParams()

    runtime = []
    faces: dict[str, list] = {"runtime": [], "fer_framed": []}
    labels = []
    for clip in load_cremad_av_clips(args.data_root):
        for _, frame in clip.frames:
            boxes = det.detect(frame)
            if not boxes or boxes[0].left_eye is None:
                continue
            side, to_crop = aligned_frame_map(boxes[0])
            runtime.append(geometry(boxes[0], side, to_crop))
            faces["runtime"].append(normalize_face(align(frame, boxes[0]), params))
            faces["fer_framed"].append(normalize_face(fer_framed(frame, boxes[0]), params))
            labels.append(clip.label)

    base = args.data_root / "fer2013"
    with open(base / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["usage"] == "PublicTest"]
    rng = np.random.default_rng(0)
    rows = [rows[i] for i in sorted(rng.choice(len(rows), min(args.fer, len(rows)), False))]
    as_is, recropped, outside, fer_crops, missed = [], [], [], [], 0
    for r in rows:
        img = cv2.imread(str(base / r["file"]), cv2.IMREAD_GRAYSCALE)
        S = img.shape[0]
        canvas = cv2.copyMakeBorder(img, S, S, S, S, cv2.BORDER_REPLICATE)
        boxes = det.detect(canvas)
        if not boxes or boxes[0].left_eye is None:
            missed += 1
            continue
        b = boxes[0]
        as_is.append(geometry(b, S, lambda q, S=S: q - S))
        side, to_crop = aligned_frame_map(b)
        recropped.append(geometry(b, side, to_crop))
        # share of the re-crop outside the original 48x48 image
        g = (np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1) + 0.5).reshape(-1, 2)
        inv = np.linalg.lstsq(
            np.c_[to_crop(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])), np.ones(3)],
            np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]),
            rcond=None,
        )[0]
        src = np.c_[g, np.ones(len(g))] @ inv
        inside = ((src >= S) & (src < 2 * S)).all(1)
        outside.append(float(1.0 - inside.mean()))
        if len(fer_crops) < 8:
            fer_crops.append(
                (normalize_face(img, params)[0], normalize_face(align(canvas, b), params)[0])
            )
    result = {
        "margin": MARGIN,
        "detector": det.name,
        "runtime": summarise(runtime),
        "fer_as_is": summarise(as_is),
        "fer_recropped": summarise(recropped)
        | {"outside_share": summarise([{"v": v} for v in outside])["v"]},
        "fer_detected": len(as_is),
        "fer_missed": missed,
        "command": "python -m train.face_crops " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    if args.graph:
        result["clips_accuracy"] = score_clips(args.graph, faces, np.array(labels))
    print(json.dumps(result, indent=1))
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(result, indent=2))
    if args.montage and faces["runtime"] and fer_crops:
        every = max(1, len(faces["runtime"]) // 8)
        rows_img = [
            np.concatenate([f[0] for f in faces["runtime"][::every][:8]], 1),
            np.concatenate([f[0] for f in faces["fer_framed"][::every][:8]], 1),
            np.concatenate([a for a, _ in fer_crops], 1),
            np.concatenate([b for _, b in fer_crops], 1),
        ]
        width = max(r.shape[1] for r in rows_img)
        rows_img = [
            np.pad(r, ((0, 0), (0, width - r.shape[1])), constant_values=-1) for r in rows_img
        ]
        img = (np.clip(np.concatenate(rows_img, 0) * 0.5 + 0.5, 0, 1) * 255).astype(np.uint8)
        args.montage.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(args.montage), cv2.resize(img, None, fx=2, fy=2,
                                                  interpolation=cv2.INTER_NEAREST))  # fmt: skip
    return result


if __name__ == "__main__":
    main()
