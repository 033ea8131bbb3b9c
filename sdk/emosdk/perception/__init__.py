"""Perception: face detection, landmarks, blendshapes, alignment and tracking in full frames.

- :class:`BlazeFaceDetector`: MediaPipe's BlazeFace on ONNX Runtime (the default detector).
- :class:`FaceLandmarker`: MediaPipe's 478 landmarks and 52 blendshapes on ONNX Runtime.
- :class:`FaceMeshTracker`: per-stream MediaPipe-style tracking (landmarks follow the face,
  the detector runs only when a face is lost).
- :class:`HaarFaceDetector`, :class:`MediaPipeFaceDetector`: the older detectors.

See docs/face.md.
"""

from .blazeface import BlazeFaceDetector
from .face import (
    FaceBox,
    FaceDetector,
    HaarFaceDetector,
    MediaPipeFaceDetector,
    align,
    create_face_detector,
    crop,
)
from .landmarks import BLENDSHAPE_NAMES, FaceLandmarker, FaceMeshTracker

__all__ = [
    "BLENDSHAPE_NAMES",
    "BlazeFaceDetector",
    "FaceBox",
    "FaceDetector",
    "FaceLandmarker",
    "FaceMeshTracker",
    "HaarFaceDetector",
    "MediaPipeFaceDetector",
    "align",
    "create_face_detector",
    "crop",
]
