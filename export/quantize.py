"""int8 variants of a bundle's graphs for CPUs, checked against fp32 before they are kept.

Dynamic quantization (weights int8 ahead of time, activations quantised per call) with ONNX
Runtime's quantizer. Only MatMul/Gemm are quantised by default: ORT's ConvInteger kernel is
slower than its fp32 convolution on x86 CPUs, so quantising the convolutions costs speed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emosdk.errors import EmosdkError
from emosdk.models.bundle import GRAPH_ROLES, MANIFEST, load_bundle, sha256_file

logger = logging.getLogger("emosdk")

MAX_MACRO_F1_DROP = 0.01
"""An int8 variant is refused when it loses more than one macro-F1 point against fp32."""


class QuantizationRejectedError(EmosdkError):
    """The quantised graphs lose more accuracy than allowed (pass force=True to keep them)."""


def update_manifest(bundle_dir: Path, **changes: object) -> dict:
    """Merge ``changes`` into model.json, re-hash every listed file, write it, verify it."""
    path = Path(bundle_dir) / MANIFEST
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta.update(changes)
    meta["files"] = {f: sha256_file(Path(bundle_dir) / f) for f in meta["files"]}
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    load_bundle(bundle_dir)
    return meta


AUDIO_EXT = {".wav", ".flac", ".ogg", ".opus", ".mp3"}
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp"}


def calibration_feeds(
    bundle_dir: Path, files: Sequence[str | Path], batch: int = 16, seed: int = 0
) -> dict[str, list[dict]]:
    """Inputs of each graph for static quantization, made from real files.

    Audio files become one model window each (log-mel through the runtime's front-end), face
    images (crops) go through the runtime's normaliser; the fusion graph gets the fp32 encoders'
    outputs of both, paired in order, with a quarter of the examples missing the audio and a
    quarter missing the video, as the model meets them.
    """
    import onnxruntime as ort

    from emosdk.capture.media import read_media
    from emosdk.features.audio import log_mel
    from emosdk.features.face import normalize_face

    bundle = load_bundle(bundle_dir)
    sr, win = bundle.audio.sample_rate, bundle.stream.window_s
    n = int(win * sr)
    mels, faces = [], []
    for f in map(Path, files):
        if f.suffix.lower() in AUDIO_EXT:
            pcm = read_media(f)[0][:n]
            padded = np.zeros(n, np.float32)
            lead = (n - len(pcm)) // 2
            padded[lead : lead + len(pcm)] = pcm  # centred, as the runtime places short clips
            mels.append(log_mel(padded, bundle.audio)[None])
        elif f.suffix.lower() in IMAGE_EXT:
            import cv2

            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is not None:
                faces.append(normalize_face(img, bundle.face))
    if not mels or not faces:
        raise ValueError("calibration needs both audio files and face images")
    face_batches = [np.stack(faces[i : i + batch]) for i in range(0, len(faces), batch)]
    sess = {
        r: ort.InferenceSession(str(bundle.graph_path(r)), providers=["CPUExecutionProvider"])
        for r in ("audio_encoder", "face_encoder")
    }
    a_embs = [sess["audio_encoder"].run(None, {"logmel": m})[0] for m in mels]
    f_embs = np.concatenate([sess["face_encoder"].run(None, {"face": b})[0] for b in face_batches])
    tv = int(round(win * bundle.stream.video_fps))
    rng = np.random.default_rng(seed)
    fusion = []
    for i, a in enumerate(a_embs):
        v = f_embs[rng.integers(0, len(f_embs), tv)][None]
        am, vm = np.ones(a.shape[:2], np.float32), np.ones((1, tv), np.float32)
        if i % 4 == 1:
            a, am = np.zeros_like(a), np.zeros_like(am)
        elif i % 4 == 2:
            v, vm = np.zeros_like(v), np.zeros_like(vm)
        fusion.append(
            {
                "audio": np.ascontiguousarray(a),
                "audio_mask": am,
                "video": np.ascontiguousarray(v, dtype=np.float32),
                "video_mask": vm,
            }
        )
    return {
        "audio_encoder": [{"logmel": m} for m in mels],
        "face_encoder": [{"face": b} for b in face_batches],
        "fusion": fusion,
    }


def _quantize_static(src: Path, dst: Path, feeds: list[dict], op_types: Sequence[str]) -> None:
    """QDQ int8 (per-channel weights, int8 activations): fast on CPUs, and the explicit
    quantization TensorRT 10 builds int8 engines from."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self._it, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QInt8,
        op_types_to_quantize=list(op_types),
    )


def quantize_bundle(
    bundle_dir: str | Path,
    *,
    op_types: Sequence[str] = ("MatMul", "Gemm"),
    roles: Sequence[str] = GRAPH_ROLES,
    manifest: str | Path | None = None,
    max_drop: float = MAX_MACRO_F1_DROP,
    force: bool = False,
    calibration: Sequence[str | Path] | None = None,
    static_roles: Sequence[str] = ("face_encoder",),
    static_op_types: Sequence[str] = ("Conv", "MatMul", "Gemm"),
) -> dict:
    """Add int8 variants of ``roles`` to a bundle (``<role>.int8.onnx``).

    Dynamic quantization (weights only, activations per call) by default. With ``calibration``
    (real audio files and face images, e.g. CREMA-D Train clips and FER2013 Training faces), the
    ``static_roles`` get static QDQ quantization calibrated on them instead, convolutions
    included: the face encoder's convolutions are where the CPU time goes (measured on 2 cores:
    static face encoder 1.95x faster than fp32; a static audio encoder was 0.71x, slower, so it
    stays dynamic by default; benchmarks/README.md).

    With ``manifest`` (held-out files, see ``emosdk-bench accuracy``), fp32 and int8 are both
    evaluated and the variant is refused when macro-F1 drops by more than ``max_drop``, unless
    ``force``. The figures go into model.json under ``metrics.int8_check``.

    Returns:
        The int8 variant map written into model.json (role -> file).

    Raises:
        QuantizationRejectedError: the accuracy check failed and ``force`` is False (the
            variant files are removed again).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    meta = dict(bundle.meta)
    files = dict(meta["files"])
    variant = {}
    feeds = calibration_feeds(bundle_dir, calibration) if calibration else None
    for role in roles:
        src = bundle.graph_path(role)
        dst = bundle_dir / f"{role}.int8.onnx"
        if feeds is not None and role in static_roles:
            _quantize_static(src, dst, feeds[role], static_op_types)
        else:
            quantize_dynamic(
                str(src),
                str(dst),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(op_types),
            )
        variant[role] = dst.name
        files[dst.name] = ""
        logger.info(
            "quantised %s: %.2f MB -> %.2f MB",
            role,
            src.stat().st_size / 1e6,
            dst.stat().st_size / 1e6,
        )
    variants = {**meta.get("variants", {}), "int8": variant}
    update_manifest(bundle_dir, files=files, variants=variants)
    if manifest is None:
        return variant
    from emosdk import Recognizer
    from emosdk.bench import accuracy

    scores = {}
    for precision in ("fp32", "int8"):
        with Recognizer(model=bundle_dir, precision=precision, smoothing="none") as rec:
            scores[precision] = accuracy(rec, Path(manifest), "auto", None, robustness=False)
    drop = scores["fp32"]["macro_f1"] - scores["int8"]["macro_f1"]
    check = {
        "manifest": str(manifest),
        "mode": {
            r: ("static QDQ" if feeds is not None and r in static_roles else "dynamic")
            for r in roles
        },
        "fp32": {k: scores["fp32"][k] for k in ("n", "accuracy", "macro_f1")},
        "int8": {k: scores["int8"][k] for k in ("n", "accuracy", "macro_f1")},
        "macro_f1_drop": drop,
        "max_drop": max_drop,
        "forced": bool(force and drop > max_drop),
    }
    if drop > max_drop and not force:
        for f in variant.values():
            (bundle_dir / f).unlink()
            files.pop(f)
        variants.pop("int8")
        update_manifest(bundle_dir, files=files, variants=variants)
        raise QuantizationRejectedError(
            f"int8 loses {100 * drop:.2f} macro-F1 points on {manifest} (allowed "
            f"{100 * max_drop:.2f}); variant removed. Pass force=True to keep it anyway."
        )
    metrics = {**meta.get("metrics", {}), "int8_check": check}
    update_manifest(bundle_dir, metrics=metrics)
    return variant
