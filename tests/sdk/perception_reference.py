"""Helpers shared by the perception tests: the stored MediaPipe reference and CK+ framing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).parents[1] / "data" / "mediapipe_reference.npz"


def pad_face(grey: np.ndarray, scale: int = 3, canvas: int = 288) -> np.ndarray:
    """tools/convert_mediapipe.py's pad_face: a 48x48 crop upscaled 3x on a grey canvas."""
    big = np.repeat(np.repeat(grey, scale, axis=0), scale, axis=1)
    out = np.full((canvas, canvas), 128, np.uint8)
    y = (canvas - big.shape[0]) // 2
    x = (canvas - big.shape[1]) // 2
    out[y : y + big.shape[0], x : x + big.shape[1]] = big
    return np.ascontiguousarray(np.repeat(out[..., None], 3, axis=2))


def reference_frames(decoded_clips, shared_data):
    """(id, frame, stored outputs) for every frame of the reference file."""
    import cv2

    ref = np.load(REFERENCE)
    clips = {p.name: frames for p, _, frames in decoded_clips}
    out = []
    for k, fid in enumerate(ref["ids"]):
        corpus, rest = str(fid).split("/", 1)
        if corpus == "cremad":
            name, i = rest.split("#")
            frame = clips[name][int(i)][1]
        else:
            frame = pad_face(cv2.imread(str(shared_data / corpus / rest), cv2.IMREAD_GRAYSCALE))
        stored = {f.split("/", 1)[1]: ref[f] for f in ref.files if f.startswith(f"{k}/")}
        out.append((str(fid), frame, stored))
    return out
