"""Perception: face detection in full frames (voice activity and tracking come with capture)."""

from .face import (
    FaceBox,
    FaceDetector,
    HaarFaceDetector,
    MediaPipeFaceDetector,
    create_face_detector,
    crop,
)

__all__ = [
    "FaceBox",
    "FaceDetector",
    "HaarFaceDetector",
    "MediaPipeFaceDetector",
    "create_face_detector",
    "crop",
]
