"""emosdk-export: bundle validation, int8 variants, TensorRT engines.

Subcommands::

    emosdk-export validate BUNDLE                       # onnxruntime self-checks
    emosdk-export quantize BUNDLE [--manifest CSV]      # dynamic-int8 variants, accuracy gate
    emosdk-export fp16 BUNDLE [--manifest CSV]          # fp16 variants (GPU), accuracy gate
    emosdk-export remove-variant BUNDLE VARIANT ROLE    # take a variant graph out again
    emosdk-export engine BUNDLE [--precision fp16]      # TensorRT engines into the cache

``validate`` and ``quantize`` need only onnxruntime; ``engine`` needs TensorRT and cuda-python on
an NVIDIA GPU. Torch checkpoints become a bundle in the repository's training code, which this
package never imports: ``python -m train.export_bundle CHECKPOINT_DIR --out BUNDLE`` (and
``--check BUNDLE`` to compare a bundle with its checkpoints), built on the plain functions of
:mod:`emosdk.export.onnx`, :mod:`emosdk.export.validate` and :mod:`emosdk.export.bundle`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from emosdk.errors import EmosdkError
from emosdk.export.validate import (  # grid, random_inputs, real_inputs: re-exported
    BATCHES,
    WINDOWS_S,
    grid,  # noqa: F401
    random_inputs,  # noqa: F401
    real_inputs,  # noqa: F401
    self_check,
)

logger = logging.getLogger("emosdk")

EXPORT_HINT = (
    "torch checkpoints become a bundle with `python -m train.export_bundle CHECKPOINT_DIR --out "
    "BUNDLE` in a repository checkout with the train extra (emosdk.export does not import the "
    "training code)"
)


# ------------------------------------------------------------------------------------------------
# subcommands


def cmd_validate(args: argparse.Namespace) -> int:
    from emosdk.models.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    results: dict[str, Any] = {}
    variants = bundle.meta.get("variants", {})
    sets = {"fp32": None, **{k: v for k, v in variants.items() if k != "int8"}}
    for name, files in sets.items():
        results[name] = {
            "self_check": self_check(
                bundle,
                batches=args.batches,
                windows_s=args.windows,
                files=files,
                tolerance=args.tolerance,
            )
        }
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


def cmd_remove_variant(args: argparse.Namespace) -> int:
    from emosdk.export.quantize import remove_variant

    try:
        gone = remove_variant(args.bundle, args.variant, args.role)
    except KeyError as e:
        print(f"emosdk-export: {e.args[0]}", file=sys.stderr)
        return 2
    print(json.dumps({"removed": f"{args.variant}/{args.role}", "deleted": gone and gone.name}))
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


def add_shape_arguments(q: argparse.ArgumentParser) -> None:
    """``--batches`` and ``--windows``: the shapes a graph is validated at (also used by
    ``python -m train.export_bundle``)."""
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emosdk-export",
        description="Check and optimise emosdk model bundles: validation, int8 variants, "
        "TensorRT engines.",
        epilog=f"Export: {EXPORT_HINT}.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser(
        "validate",
        help="re-check a bundle's ONNX graphs",
        description="Check a bundle's graphs (and every variant but int8) with onnxruntime at "
        "every batch size and window length: declared output shapes, finite values, each batch "
        "row equal to the row run alone (max abs difference <= --tolerance). To compare a bundle "
        "with the torch checkpoints it was exported from, run `python -m train.export_bundle "
        "CHECKPOINT_DIR --check BUNDLE` from a repository checkout.",
    )
    q.add_argument("bundle", help="bundle folder (with model.json)")
    q.add_argument(
        "--tolerance", type=float, default=1e-4, help="max abs difference of a batch row"
    )
    q.add_argument("--json", help="also write the report to this file")
    add_shape_arguments(q)
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
        "remove-variant",
        help="take a role's graph out of a variant",
        description="Remove ROLE from the bundle's VARIANT (e.g. int8 fusion) and delete the "
        "file unless something else still uses it; model.json is re-hashed.",
    )
    q.add_argument("bundle", help="bundle folder (edited in place)")
    q.add_argument("variant", help="variant name in model.json (int8, fp16, opset18, ...)")
    q.add_argument("role", help="graph role (audio_encoder, face_encoder, fusion)")
    q.set_defaults(func=cmd_remove_variant)

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
    argv = list(sys.argv[1:] if argv is None else argv)
    if next((a for a in argv if not a.startswith("-")), None) == "onnx":
        print(f"emosdk-export onnx: error: moved: {EXPORT_HINT}", file=sys.stderr)
        return 2
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
