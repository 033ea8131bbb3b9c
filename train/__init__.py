"""Training code for emosdk models (needs the ``train`` extra: torch, onnx, onnxscript, tqdm).

Run the scripts from the repository root, e.g. ``python -m train.train_seed --help``.
"""

LABELS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness")
"""The project label set, in the order of every model output."""

FER_CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
"""FER2013 classes in the order of the face encoder's pre-training head (labels + surprise)."""
