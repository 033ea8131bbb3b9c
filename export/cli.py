"""emosdk-export: ONNX bundles from checkpoints, validation, int8 variants, TensorRT engines.

Subcommands::

    emosdk-export onnx CHECKPOINT_DIR --out BUNDLE      # train_seed checkpoints -> bundle
    emosdk-export validate BUNDLE [--checkpoints DIR]   # onnxruntime self-checks (+ torch)
    emosdk-export quantize BUNDLE [--manifest CSV]      # dynamic-int8 variants, accuracy gate
    emosdk-export fp16 BUNDLE [--manifest CSV]          # fp16 variants (GPU), accuracy gate
    emosdk-export engine BUNDLE [--precision fp16]      # TensorRT engines into the cache

``onnx`` and ``validate --checkpoints`` need torch and the repository's ``train`` package (run
them from the repository root); ``validate`` without checkpoints and ``quantize`` need only
onnxruntime; ``engine`` needs TensorRT and cuda-python on an NVIDIA GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emosdk.errors import EmosdkError

logger = logging.getLogger("emosdk")

BATCHES = (1, 2, 3, 4, 5, 6, 7, 8)
WINDOWS_S = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
OPSET18_VARIANT = "opset18"
"""model.json ``variants`` key of the opset-18 graphs that TensorRT builds from."""


# ------------------------------------------------------------------------------------------------
# validation inputs


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


# ------------------------------------------------------------------------------------------------
# checkpoints (train/train_seed.py output folders)


def load_checkpoints(ckpt_dir: str | Path) -> tuple[Any, Any, Any, dict]:
    """The three torch modules of a ``train.train_seed`` output folder, in eval mode.

    Reads ``config.json`` for the widths and ``face.pt``, ``audio.pt``, ``fusion.pt`` (the
    selected states of finished stages) for the weights.

    Returns:
        (audio_encoder, face_encoder, fusion, config dict).

    Raises:
        EmosdkError: the folder lacks a file, or ``train`` / torch cannot be imported.
    """
    try:
        from train.checkpoints import load_checkpoints
    except ImportError as e:
        raise EmosdkError(
            f"loading checkpoints needs torch and the repository's train package ({e}); run from "
            "the repository root with the export extra installed"
        ) from e
    from emosdk.features.audio import LogMelParams

    d = Path(ckpt_dir)
    missing = [
        f for f in ("config.json", "face.pt", "audio.pt", "fusion.pt") if not (d / f).is_file()
    ]
    if missing:
        raise EmosdkError(
            f"{d}: missing {missing}; expected a finished `python -m train.train_seed --out {d}` "
            "folder"
        )
    cfg = json.loads((d / "config.json").read_text())
    modules = load_checkpoints(d, LogMelParams().n_mels)
    return modules["audio"], modules["face"], modules["fusion"], cfg


def torch_modules(audio: Any, face: Any, fusion: Any) -> dict[str, Any]:
    """Role -> the torch module that the role's ONNX graph was exported from."""
    from train.models import AudioEncoderGraph

    return {"audio_encoder": AudioEncoderGraph(audio), "face_encoder": face, "fusion": fusion}


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


# ------------------------------------------------------------------------------------------------
# subcommands


def cmd_onnx(args: argparse.Namespace) -> int:
    import tempfile

    from emosdk.export.bundle import write_bundle
    from emosdk.export.onnx import data_path, read_export_metadata, set_external_data
    from emosdk.export.quantize import update_manifest
    from emosdk.features.audio import LogMelParams
    from emosdk.features.face import FaceParams
    from emosdk.models.bundle import StreamParams, load_bundle
    from train import FER_CLASSES, LABELS
    from train.bundle import export_graphs

    audio, face, fusion, cfg = load_checkpoints(args.checkpoints)
    audio_p, face_p, stream_p = LogMelParams(), FaceParams(), StreamParams()
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        graphs = export_graphs(
            audio, face, fusion, Path(tmp) / "main", audio_p, face_p, stream_p, args.opset
        )
        if args.external_data:
            for p in graphs.values():
                set_external_data(p, True)
        records = {role: read_export_metadata(p) for role, p in graphs.items()}
        summary_path = Path(args.checkpoints) / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        write_bundle(
            out,
            name=args.name or cfg.get("name", "emosdk-av"),
            version=args.version or cfg.get("version", "0.0.0"),
            labels=list(LABELS),
            graphs=graphs,
            audio=audio_p,
            face=face_p,
            stream=stream_p,
            data_card={"summary": f"exported from {args.checkpoints}", "train_config": cfg},
            metrics={"training": summary} if summary else {},
            extra={"face_logits_labels": list(FER_CLASSES), "export": records},
        )
        if args.opset != 18 and not args.no_tensorrt_graphs:
            trt_graphs = export_graphs(
                audio, face, fusion, Path(tmp) / "opset18", audio_p, face_p, stream_p, 18
            )
            bundle = load_bundle(out)
            files = dict(bundle.meta["files"])
            variant = {}
            for role, p in trt_graphs.items():
                dst = out / f"{role}.opset18.onnx"
                dst.write_bytes(p.read_bytes())  # weights embedded: no data file name to keep
                if args.external_data:
                    set_external_data(dst, True)  # writes <role>.opset18.onnx.data
                files[dst.name] = ""
                if data_path(dst).exists():
                    files[data_path(dst).name] = ""
                variant[role] = dst.name
                records[f"{role}.opset18"] = read_export_metadata(p)
            update_manifest(
                out,
                files=files,
                variants={**bundle.meta.get("variants", {}), OPSET18_VARIANT: variant},
                export=records,
            )
    bundle = load_bundle(out)
    if not args.no_validate:
        modules = torch_modules(audio, face, fusion)
        report = validate_against_torch(
            bundle, modules, batches=args.batches, windows_s=args.windows, media=args.media
        )
        extra = {}
        variant = bundle.meta.get("variants", {}).get(OPSET18_VARIANT)
        if variant:
            extra = validate_against_torch(
                bundle,
                modules,
                batches=args.batches,
                windows_s=args.windows,
                media=args.media,
                files=variant,
            )
        export = dict(bundle.meta.get("export", {}))
        export["validation"] = {
            "command": "emosdk-export onnx " + " ".join(sys.argv[2:]),
            "batches": list(args.batches),
            "windows_s": list(args.windows),
            "media": [str(m) for m in args.media],
            "graphs": report,
            OPSET18_VARIANT: extra,
        }
        update_manifest(out, export=export)
    print(f"wrote {out}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from emosdk.models.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    results: dict[str, Any] = {}
    variants = bundle.meta.get("variants", {})
    sets = {"fp32": None, **{k: v for k, v in variants.items() if k != "int8"}}
    for name, files in sets.items():
        results[name] = {
            "self_check": self_check(
                bundle, batches=args.batches, windows_s=args.windows, files=files
            )
        }
    if args.checkpoints:
        audio, face, fusion, _ = load_checkpoints(args.checkpoints)
        modules = torch_modules(audio, face, fusion)
        for name, files in sets.items():
            results[name]["torch"] = validate_against_torch(
                bundle,
                modules,
                batches=args.batches,
                windows_s=args.windows,
                tolerance=args.tolerance,
                media=args.media,
                files=files,
            )
    text = json.dumps(results, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


def _manifest_files(path: str) -> list[Path]:
    """The files of a manifest CSV (``file`` column, relative to the CSV's folder)."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return [Path(path).parent / row["file"] for row in csv.DictReader(f)]


def cmd_quantize(args: argparse.Namespace) -> int:
    from emosdk.export.quantize import quantize_bundle

    variant = quantize_bundle(
        args.bundle,
        op_types=tuple(args.op_types),
        roles=tuple(args.roles) if args.roles else ("audio_encoder", "face_encoder", "fusion"),
        manifest=args.manifest,
        max_drop=args.max_drop,
        force=args.force,
        calibration=_manifest_files(args.calibration) if args.calibration else None,
    )
    print(json.dumps({"int8": variant}, indent=2))
    return 0


def cmd_fp16(args: argparse.Namespace) -> int:
    from emosdk.export.quantize import fp16_bundle

    variant = fp16_bundle(
        args.bundle,
        roles=tuple(args.roles) if args.roles else ("audio_encoder", "face_encoder", "fusion"),
        manifest=args.manifest,
        max_drop=args.max_drop,
        force=args.force,
    )
    print(json.dumps({"fp16": variant}, indent=2))
    return 0


def cmd_engine(args: argparse.Namespace) -> int:
    from emosdk.export import tensorrt as ET
    from emosdk.models.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    trt = ET.import_tensorrt()  # fail early, with the install hint
    ET.import_cudart()
    cache = ET.EngineCache(args.cache_dir)
    cache.check_writable()
    written = {}
    for role in ET.iter_roles(args.roles, bundle.graphs):
        for precision in args.precision:
            # the opset-18 copy, or the fp16/int8 graph where TensorRT needs it (engine_source)
            onnx_path = ET.engine_source(bundle, role, precision, ET.strongly_typed(trt))
            written[f"{role}/{precision}"] = str(
                ET.engine_for(
                    onnx_path,
                    bundle.graphs[role],
                    bundle.audio,
                    bundle.stream,
                    precision=precision,
                    windows_s=args.windows,
                    batch=tuple(args.batch),
                    cache=cache,
                    bundle=f"{bundle.name} {bundle.version}",
                    workspace=int(args.workspace_mb) << 20,
                    dla_core=args.dla_core,
                )
            )
    print(json.dumps(written, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emosdk-export",
        description="Export emosdk models: ONNX bundles, validation, int8 variants, TensorRT "
        "engines.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def shapes(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--batches",
            type=int,
            nargs="+",
            default=list(BATCHES),
            help="batch sizes to validate at (default 1..8)",
        )
        q.add_argument(
            "--windows",
            type=float,
            nargs="+",
            default=list(WINDOWS_S),
            help="window lengths in seconds to validate at (default 1..6)",
        )

    q = sub.add_parser(
        "onnx",
        help="export a train_seed checkpoint folder to a bundle",
        description="Export the three graphs of a `python -m train.train_seed` output folder "
        "(config.json, face.pt, audio.pt, fusion.pt) with the dynamo exporter, validate them "
        "against torch at every batch size and window length, and write a bundle. The main "
        "graphs use --opset (23: fused Attention for ONNX Runtime); opset-18 copies for TensorRT "
        "are added as the 'opset18' variant.",
    )
    q.add_argument("checkpoints", help="train_seed output folder (--out of the training run)")
    q.add_argument("--out", required=True, help="bundle folder to write (replaced if it exists)")
    q.add_argument(
        "--opset", type=int, default=23, choices=(18, 23), help="opset of the main graphs"
    )
    q.add_argument(
        "--external-data",
        action="store_true",
        help="store weights in <graph>.onnx.data files beside the graphs",
    )
    q.add_argument(
        "--no-tensorrt-graphs", action="store_true", help="do not add the opset-18 variant"
    )
    q.add_argument("--name", default="", help="model name (default from config.json)")
    q.add_argument("--version", default="", help="model version (default from config.json)")
    q.add_argument(
        "--media", nargs="*", default=[], help="real audio/video files to validate on as well"
    )
    q.add_argument("--no-validate", action="store_true", help="skip the batch x window grid")
    shapes(q)
    q.set_defaults(func=cmd_onnx)

    q = sub.add_parser(
        "validate",
        help="re-check a bundle's ONNX graphs",
        description="Check a bundle's graphs with onnxruntime at every batch size and window "
        "length: declared output shapes, finite values, each batch row equal to the row run "
        "alone. With --checkpoints, also compare with the torch modules (max abs difference "
        "<= --tolerance per output).",
    )
    q.add_argument("bundle", help="bundle folder (with model.json)")
    q.add_argument("--checkpoints", help="train_seed output folder to compare against (torch)")
    q.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference vs torch")
    q.add_argument("--media", nargs="*", default=[], help="real audio/video files to check on")
    q.add_argument("--json", help="also write the report to this file")
    shapes(q)
    q.set_defaults(func=cmd_validate)

    q = sub.add_parser(
        "quantize",
        help="add dynamic-int8 variants for CPUs",
        description="Add dynamic-int8 variants (<role>.int8.onnx) of a bundle's graphs. With "
        "--manifest (held-out files), fp32 and int8 are both evaluated and the variant is "
        "refused when macro-F1 drops by more than --max-drop, unless --force.",
    )
    q.add_argument("bundle", help="bundle folder (edited in place)")
    q.add_argument("--manifest", help="held-out manifest CSV for the accuracy check")
    q.add_argument(
        "--max-drop", type=float, default=0.01, help="largest macro-F1 drop allowed (0.01 = 1 pt)"
    )
    q.add_argument("--force", action="store_true", help="keep the variant even if it loses more")
    q.add_argument(
        "--calibration",
        help="manifest CSV of real audio files and face images: the face encoder gets static "
        "QDQ int8 calibrated on them (faster than dynamic; the form TensorRT int8 needs)",
    )
    q.add_argument("--roles", nargs="*", help="graphs to quantize (default all three)")
    q.add_argument("--op-types", nargs="+", default=["MatMul", "Gemm"], help="ONNX ops to quantize")
    q.set_defaults(func=cmd_quantize)

    q = sub.add_parser(
        "fp16",
        help="add fp16 variants for NVIDIA GPUs (ONNX Runtime's CUDA provider)",
        description="Add fp16 variants (<role>.fp16.onnx, inputs and outputs kept float32) of a "
        "bundle's graphs, for precision='fp16' on ONNX Runtime's CUDA provider and for strongly "
        "typed TensorRT builds. Each is compared with fp32 on the CPU (largest difference per "
        "output into model.json); with --manifest, fp32 and fp16 are both evaluated on the CPU "
        "and the variant is refused when macro-F1 drops by more than --max-drop, unless --force.",
    )
    q.add_argument("bundle", help="bundle folder (edited in place)")
    q.add_argument("--manifest", help="held-out manifest CSV for the accuracy check")
    q.add_argument(
        "--max-drop", type=float, default=0.01, help="largest macro-F1 drop allowed (0.01 = 1 pt)"
    )
    q.add_argument("--force", action="store_true", help="keep the variant even if it loses more")
    q.add_argument("--roles", nargs="*", help="graphs to convert (default all three)")
    q.set_defaults(func=cmd_fp16)

    q = sub.add_parser(
        "engine",
        help="build TensorRT engines into the engine cache",
        description="Build TensorRT engines of a bundle's graphs (the opset-18 variant when "
        "present) into the engine cache ($EMOSDK_ENGINE_CACHE or ~/.cache/emosdk/engines), keyed "
        "by ONNX hash, GPU, TensorRT version and precision. Needs TensorRT (JetPack on a "
        "Jetson, NVIDIA's wheel on a desktop GPU) and cuda-python. A first build takes minutes "
        "on a Jetson.",
    )
    q.add_argument("bundle", help="bundle folder (with model.json)")
    q.add_argument(
        "--precision",
        nargs="+",
        default=["fp16"],
        choices=("fp32", "fp16", "int8"),
        help="engine precisions (int8 needs a Q/DQ graph)",
    )
    q.add_argument(
        "--windows",
        type=float,
        nargs="+",
        default=list(WINDOWS_S),
        help="window lengths (s) the engines accept; min and max bound the profile",
    )
    q.add_argument(
        "--batch",
        type=int,
        nargs=3,
        default=[1, 1, 8],
        metavar=("MIN", "OPT", "MAX"),
        help="batch range of the profile",
    )
    q.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace in MiB")
    q.add_argument("--cache-dir", help="engine cache folder (default $EMOSDK_ENGINE_CACHE)")
    q.add_argument(
        "--dla-core",
        type=int,
        help="build for this DLA core (Jetson AGX/NX Orin): static shapes (the bundle's window, "
        "the opt batch), GPU fallback for layers the DLA cannot run",
    )
    q.add_argument("--roles", nargs="*", help="graphs to build (default all three)")
    q.set_defaults(func=cmd_engine)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("emosdk").setLevel(logging.INFO if args.verbose else logging.WARNING)
    if getattr(args, "command", "") == "engine":
        logging.getLogger("emosdk").setLevel(logging.INFO)  # builds take minutes: show progress
    try:
        return int(args.func(args) or 0)
    except (EmosdkError, ValueError) as e:
        print(f"emosdk-export {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
