"""Validation of a bundle's ONNX graphs: plain functions behind ``emosdk-export validate`` and the
repository's ``python -m train.export_bundle``.

* :func:`grid`, :func:`random_inputs`, :func:`real_inputs`: the inputs (every batch size 1..8 and
  window length 1..6 s; real log-mel windows and face crops from media files);
* :func:`self_check`: onnxruntime only (declared shapes, finite values, batch rows independent);
* :func:`validate_against_torch`: each graph against the torch module it was exported from (needs
  torch; the caller brings the modules, so this package never imports the training code).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("emosdk")

BATCHES = (1, 2, 3, 4, 5, 6, 7, 8)
"""Batch sizes validated by default."""
WINDOWS_S = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
"""Window lengths (s) validated by default."""
OPSET18_VARIANT = "opset18"
"""model.json ``variants`` key of the opset-18 copies of the graphs (TensorRT builds from them)."""


def grid(batches: Sequence[int], windows_s: Sequence[float]) -> list[tuple[int, float]]:
    """(batch, window) pairs covering every batch and every window at least once.

    The full product is not needed to catch a baked-in size: pairing the i-th batch with the
    i-th window (cycled) plus the two extreme corners covers each value of each axis.
    """
    n = max(len(batches), len(windows_s))
    pairs = {(batches[i % len(batches)], windows_s[(i * 5) % len(windows_s)]) for i in range(n)}
    pairs |= {(min(batches), max(windows_s)), (max(batches), min(windows_s))}
    pairs |= {(max(batches), max(windows_s))}
    return sorted(pairs)


def random_inputs(
    role: str,
    batch: int,
    window_s: float,
    bundle_like: Any,
    d_audio: int,
    d_video: int,
    seed: int = 0,
    modalities: tuple[bool, bool] = (True, True),
) -> tuple[np.ndarray, ...]:
    """Fresh random float32 inputs of one graph for a batch size and a window length.

    Args:
        role: ``audio_encoder``, ``face_encoder`` or ``fusion``.
        batch: batch size (the face encoder gets ``batch * Tv`` crops, one window's faces).
        window_s: window length in seconds.
        bundle_like: anything with ``audio`` (LogMelParams), ``face`` (FaceParams) and
            ``stream`` (StreamParams), e.g. a loaded bundle.
        d_audio, d_video: embedding widths (fusion inputs).
        seed: random seed.
        modalities: (audio present, video present) for the fusion masks.
    """
    rng = np.random.default_rng([seed, batch, int(window_s * 1000)])
    audio, face, stream = bundle_like.audio, bundle_like.face, bundle_like.stream
    frames = audio.num_frames(int(round(window_s * audio.sample_rate)))
    steps = max(1, frames // stream.audio_frames_per_step)
    tv = max(1, int(round(window_s * stream.video_fps)))
    f32 = np.float32
    if role == "audio_encoder":
        # natural-log mel power of speech sits around -14..0
        return (rng.normal(-6.0, 3.0, (batch, frames, audio.n_mels)).astype(f32),)
    if role == "face_encoder":
        return (rng.normal(0.0, 1.0, (batch * tv, 1, face.size, face.size)).astype(f32),)
    if role == "fusion":
        am = np.full((batch, steps), float(modalities[0]), f32)
        vm = np.full((batch, tv), float(modalities[1]), f32)
        if batch > 1 and all(modalities):  # ragged windows: the last row lost a few positions
            am[-1, -max(1, steps // 5) :] = 0.0
            vm[-1, -max(1, tv // 5) :] = 0.0
        a = rng.normal(0.0, 1.0, (batch, steps, d_audio)).astype(f32) * am[..., None]
        v = rng.normal(0.0, 1.0, (batch, tv, d_video)).astype(f32) * vm[..., None]
        return a, am, v, vm
    raise ValueError(f"unknown graph role {role!r}")


def real_inputs(
    media: Sequence[str | Path], bundle_like: Any, windows_s: Sequence[float]
) -> dict[str, list[tuple[np.ndarray, ...]]]:
    """Audio encoder and face encoder inputs from real media files.

    Audio: the log-mel of the first ``w`` seconds of each file for each window ``w``, one batch
    per window (files shorter than a window are zero-padded). Faces: a centred square crop of
    every 5th video frame, normalised as the runtime does (no face detector here: these are
    real images, not necessarily well-framed faces).

    Returns:
        ``{"audio_encoder": [(logmel,), ...], "face_encoder": [(face,), ...]}``.
    """
    from emosdk.capture.media import read_media
    from emosdk.features.audio import log_mel
    from emosdk.features.face import normalize_face

    audio_p, face_p = bundle_like.audio, bundle_like.face
    clips, crops = [], []
    for m in media:
        pcm, frames = read_media(m)
        clips.append(pcm)
        for _, img in frames[::5]:
            h, w = img.shape[:2]
            s = min(h, w)
            y, x = (h - s) // 2, (w - s) // 2
            crops.append(normalize_face(np.ascontiguousarray(img[y : y + s, x : x + s]), face_p))
    out: dict[str, list[tuple[np.ndarray, ...]]] = {"audio_encoder": [], "face_encoder": []}
    for w in windows_s:
        n = int(round(w * audio_p.sample_rate))
        batch = [log_mel(np.pad(c[:n], (0, max(0, n - len(c[:n])))), audio_p) for c in clips]
        if batch:
            out["audio_encoder"].append((np.stack(batch).astype(np.float32),))
    if crops:
        out["face_encoder"].append((np.stack(crops).astype(np.float32),))
    return out


def _dims(bundle: Any) -> tuple[int, int]:
    g = bundle.graphs
    d_audio = int(g["fusion"].input("audio").shape[-1])
    d_video = int(g["fusion"].input("video").shape[-1])
    return d_audio, d_video


def validate_against_torch(
    bundle: Any,
    modules: dict[str, Any],
    *,
    batches: Sequence[int] = BATCHES,
    windows_s: Sequence[float] = WINDOWS_S,
    tolerance: float = 1e-4,
    media: Sequence[str | Path] = (),
    files: dict[str, str] | None = None,
) -> dict[str, dict]:
    """Compare each role's ONNX file with its torch module on the batch x window grid.

    Fusion is checked with both modalities (ragged masks), audio only and video only. With
    ``media``, real log-mel windows and face crops are checked too, and real fusion inputs are
    made from them with the torch encoders.

    Args:
        bundle: the loaded bundle (:func:`emosdk.models.bundle.load_bundle`).
        modules: role -> the torch module its graph was exported from, in eval mode (from a
            checkout: ``train.checkpoints.graph_modules``).
        batches, windows_s: the grid (:func:`grid`).
        tolerance: largest absolute difference allowed per output.
        media: real audio/video files to check on as well.
        files: role -> ONNX file name in the bundle, to check a variant (default: the main graphs).

    Returns:
        role -> :meth:`~emosdk.export.onnx.ValidationReport.to_dict`.

    Raises:
        ExportShapeError, ExportValueError: on the first failing check.
    """
    import torch

    from emosdk.export.onnx import compare_onnx

    d_audio, d_video = _dims(bundle)
    real = real_inputs(media, bundle, windows_s) if media else {}
    reports = {}
    for role, module in modules.items():
        spec = bundle.graphs[role]
        names = [t.name for t in spec.inputs]
        sets = []
        for b, w in grid(batches, windows_s):
            mods = (
                [(True, True)] if role != "fusion" else [(True, True), (True, False), (False, True)]
            )
            for m in mods:
                sets.append(random_inputs(role, b, w, bundle, d_audio, d_video, modalities=m))
        sets += real.get(role, [])
        if role == "fusion" and real.get("audio_encoder") and real.get("face_encoder"):
            with torch.no_grad():
                faces = modules["face_encoder"](torch.from_numpy(real["face_encoder"][0][0]))[0]
                for (mel,) in real["audio_encoder"]:
                    a = modules["audio_encoder"](torch.from_numpy(mel))
                    tv = max(1, min(len(faces), 15))
                    v = faces[:tv][None].expand(a.shape[0], -1, -1).contiguous()
                    sets.append(
                        (a, torch.ones(a.shape[:2]), v, torch.ones(v.shape[:2]))  # type: ignore[arg-type]
                    )
        tensors = [tuple(torch.as_tensor(x) for x in s) for s in sets]
        path = bundle.path / (files or {}).get(role, spec.file)
        report = compare_onnx(module, path, tensors, names, tolerance)
        logger.info(
            "%s: %d checks, max |diff| %s",
            path.name,
            len(tensors),
            {k: f"{v:.2e}" for k, v in report.max_abs_diff.items()},
        )
        reports[role] = report.to_dict()
    return reports


def self_check(
    bundle: Any,
    *,
    batches: Sequence[int] = BATCHES,
    windows_s: Sequence[float] = WINDOWS_S,
    files: dict[str, str] | None = None,
    tolerance: float = 1e-4,
) -> dict[str, dict]:
    """onnxruntime-only checks of a bundle's graphs (no torch needed).

    For every role on the batch x window grid: the outputs have the declared ranks and fixed
    sizes and are finite, and the batched result equals running each batch row alone (within
    ``tolerance``), which catches sizes baked into reshapes and rows leaking into each other.

    Returns:
        role -> {"checks": n, "batch_consistency_max_abs_diff": d}.

    Raises:
        ExportShapeError, ExportValueError: on the first failing check.
    """
    import onnxruntime as ort

    from emosdk.export.onnx import ExportShapeError, ExportValueError

    d_audio, d_video = _dims(bundle)
    out = {}
    for role, spec in bundle.graphs.items():
        path = bundle.path / (files or {}).get(role, spec.file)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [t.name for t in spec.inputs]
        worst, n = 0.0, 0
        for b, w in grid(batches, windows_s):
            feeds = dict(zip(names, random_inputs(role, b, w, bundle, d_audio, d_video)))
            try:
                got = sess.run(None, feeds)
            except Exception as e:
                raise ExportShapeError(f"{path}: cannot run B={b} window={w}s: {e}") from e
            for t, y in zip(spec.outputs, got):
                if y.ndim != len(t.shape) or any(
                    isinstance(d, int) and d != s for d, s in zip(t.shape, y.shape)
                ):
                    raise ExportShapeError(
                        f"{path}: output {t.name} has shape {list(y.shape)}, model.json declares "
                        f"{list(t.shape)} (B={b}, window={w}s)",
                        path=path,
                        output=t.name,
                    )
                if not np.isfinite(y).all():
                    raise ExportValueError(
                        f"{path}: output {t.name} is not finite (B={b}, window={w}s)",
                        diff=float("inf"),
                        tolerance=tolerance,
                        path=path,
                        output=t.name,
                    )
            rows = b if role != "face_encoder" else min(b, 2)
            for i in range(rows):
                one = {k: v[i : i + 1] for k, v in feeds.items()}
                for y, y1 in zip(got, sess.run(None, one)):
                    d = float(np.max(np.abs(y[i : i + 1].astype(np.float64) - y1)))
                    worst = max(worst, d)
            n += 1
        if worst > tolerance:
            raise ExportValueError(
                f"{path}: a batch row differs from the same row run alone by {worst:.3g}",
                diff=worst,
                tolerance=tolerance,
                path=path,
            )
        out[role] = {"checks": n, "batch_consistency_max_abs_diff": worst}
        logger.info("%s: %d shapes ok, batch consistency %.2e", path.name, n, worst)
    return out
