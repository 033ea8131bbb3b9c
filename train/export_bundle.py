"""Export a ``python -m train.train_seed`` checkpoint folder to a model bundle, or check a bundle
against the checkpoints it came from.

    python -m train.export_bundle CHECKPOINT_DIR --out BUNDLE [--opset 23] [--media CLIP ...]
    python -m train.export_bundle CHECKPOINT_DIR --check BUNDLE [--json REPORT]

``--out``: the three graphs (audio encoder, face encoder, fusion) are exported with the dynamo
exporter (:func:`train.bundle.export_graphs`, which checks each against torch with onnxruntime),
the main graphs at ``--opset`` (23: fused Attention for ONNX Runtime) plus opset-18 copies for
TensorRT as the ``opset18`` variant, written with :func:`emosdk.export.bundle.write_bundle`, then
validated against torch at every batch size 1..8 and window length 1..6 s
(:func:`emosdk.export.validate.validate_against_torch`; the report goes into model.json under
``export.validation``).

``--check``: the same comparison for an existing bundle's main graphs and its ``opset18`` variant,
printed as JSON. The onnxruntime-only checks stay in the shipped ``emosdk-export validate``; this
is the repository side, because the torch modules come from ``train`` (which ``emosdk.export``
never imports).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
from pathlib import Path

from emosdk.errors import EmosdkError
from emosdk.export.bundle import write_bundle
from emosdk.export.cli import add_shape_arguments
from emosdk.export.onnx import data_path, read_export_metadata, set_external_data
from emosdk.export.quantize import update_manifest
from emosdk.export.validate import OPSET18_VARIANT, validate_against_torch
from emosdk.features.audio import LogMelParams
from emosdk.features.face import FaceParams
from emosdk.models.bundle import StreamParams, load_bundle

from . import FER_CLASSES, LABELS
from .bundle import export_graphs
from .checkpoints import graph_modules, load_checkpoint_folder


def export(args: argparse.Namespace, command: str) -> Path:
    """Export the checkpoints of ``args.checkpoints`` to the bundle ``args.out``."""
    modules, cfg = load_checkpoint_folder(args.checkpoints, LogMelParams().n_mels)
    audio, face, fusion = modules["audio"], modules["face"], modules["fusion"]
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
        report = check(bundle, graph_modules(modules), args)
        export_meta = dict(bundle.meta.get("export", {}))
        export_meta["validation"] = {
            "command": command,
            "batches": list(args.batches),
            "windows_s": list(args.windows),
            "media": [str(m) for m in args.media],
            "graphs": report["fp32"],
            OPSET18_VARIANT: report.get(OPSET18_VARIANT, {}),
        }
        update_manifest(out, export=export_meta)
    return out


def check(bundle, modules: dict, args: argparse.Namespace) -> dict[str, dict]:
    """Compare the bundle's main graphs (``fp32``) and its ``opset18`` variant, when present,
    with the torch modules: variant -> role -> validation report."""
    sets = {"fp32": None}
    variant = bundle.meta.get("variants", {}).get(OPSET18_VARIANT)
    if variant:
        sets[OPSET18_VARIANT] = variant
    return {
        name: validate_against_torch(
            bundle,
            modules,
            batches=args.batches,
            windows_s=args.windows,
            tolerance=args.tolerance,
            media=args.media,
            files=files,
        )
        for name, files in sets.items()
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.export_bundle", description=__doc__.splitlines()[0]
    )
    p.add_argument("checkpoints", help="train_seed output folder (--out of the training run)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="bundle folder to write (replaced if it exists)")
    what.add_argument("--check", help="existing bundle to compare with the checkpoints")
    p.add_argument(
        "--opset", type=int, default=23, choices=(18, 23), help="opset of the main graphs"
    )
    p.add_argument(
        "--external-data",
        action="store_true",
        help="store weights in <graph>.onnx.data files beside the graphs",
    )
    p.add_argument(
        "--no-tensorrt-graphs", action="store_true", help="do not add the opset18 variant"
    )
    p.add_argument("--name", default="", help="model name (default from config.json)")
    p.add_argument("--version", default="", help="model version (default from config.json)")
    p.add_argument(
        "--media", nargs="*", default=[], help="real audio/video files to validate on as well"
    )
    p.add_argument("--no-validate", action="store_true", help="--out: skip the comparison")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference vs torch")
    p.add_argument("--json", help="--check: also write the report to this file")
    add_shape_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = "python -m train.export_bundle " + " ".join(shlex.quote(a) for a in argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("emosdk").setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        if args.out:
            print(f"wrote {export(args, command)}")
            return 0
        modules, _ = load_checkpoint_folder(args.checkpoints, LogMelParams().n_mels)
        report = check(load_bundle(args.check), graph_modules(modules), args)
    except (EmosdkError, ValueError) as e:
        print(f"train.export_bundle: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
