"""``emosdk`` command: run the recognizer over media files, or show what this machine can run."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from . import __version__
from ._cli import run_command
from .backends import available_backends
from .config import RecognizerConfig
from .models import available_models, load_model
from .recognizer import Recognizer


def _run(args: argparse.Namespace) -> int:
    overrides = {"model": args.model, "backend": args.backend}
    if args.hop is not None:
        overrides["hop_s"] = args.hop
    if args.window is not None:
        overrides["window_s"] = args.window
    if args.no_smoothing:
        overrides["smoothing"] = "none"
    config = RecognizerConfig(**overrides)
    with Recognizer(config) as rec:
        for path in args.files:
            results = list(rec.stream(source=path))
            if args.json:
                for r in results:
                    print(json.dumps({"file": str(path), **r.to_dict()}))
                continue
            print(f"\n{path}  ({len(results)} results, hop {rec.hop_s:.2f} s)")
            print(
                f"  {'t (s)':>6}  {'label':<10} {'conf':>5}  {'modalities':<12} "
                f"{'latency ms':>10}  note"
            )
            for r in results:
                mods = "+".join(m.value for m in r.modalities) or "-"
                print(
                    f"  {r.timestamp_ms / 1000:6.2f}  {r.label or '-':<10} {r.confidence:5.2f}  "
                    f"{mods:<12} {r.latency.total_ms:10.1f}  {r.reason or ''}"
                )
            votes = Counter(r.label for r in results if r.label)
            if votes:
                print(f"  most frequent: {votes.most_common(1)[0][0]}")
    return 0


def _info(args: argparse.Namespace) -> int:
    info = {
        "emosdk": __version__,
        "models": {},
        "backends": [
            {
                "name": b.name,
                "available": b.available,
                "devices": list(b.devices),
                "detail": b.detail,
            }
            for b in available_backends()
        ],
    }
    from . import samples

    info["samples"] = {"folder": str(samples.SAMPLES_DIR), "files": samples.names()}
    for name in available_models():
        b = load_model(name)
        info["models"][name] = {
            "name": b.name,
            "version": b.version,
            "labels": list(b.labels),
            "size_mb": round(b.size_bytes / 1e6, 2),
            "path": str(b.path),
        }
    print(json.dumps(info, indent=2))
    return 0


def _samples(args: argparse.Namespace) -> int:
    from . import samples

    chosen = samples.paths()
    if args.kind == "av":
        chosen = [p for p in chosen if p.suffix == ".flv"]
    elif args.kind == "audio":
        chosen = [p for p in chosen if p.suffix == ".mp3"]
    for p in chosen:
        print(p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emosdk",
        description="Audio-visual emotion recognition on the edge.",
    )
    parser.add_argument("--version", action="version", version=f"emosdk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the SDK does")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="stream media files through the recognizer and print a result every hop",
        description="Stream media files (mp4, flv, avi, webm, wav, mp3, ...) through the "
        "recognizer and print one result per hop: label, confidence, modalities used, latency.",
    )
    run.add_argument("files", nargs="+", type=Path, help="media files")
    run.add_argument("--model", default="default", help="bundled model name or bundle folder")
    run.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"])
    run.add_argument("--hop", type=float, help="seconds between results (default: the model's)")
    run.add_argument("--window", type=float, help="analysis window in seconds (default: model's)")
    run.add_argument("--no-smoothing", action="store_true", help="report raw per-window scores")
    run.add_argument("--json", action="store_true", help="one JSON object per result")
    run.set_defaults(func=_run)
    info = sub.add_parser("info", help="bundled models and the backends this machine can run")
    info.set_defaults(func=_info)
    smp = sub.add_parser(
        "samples",
        help="paths of the real recordings shipped with emosdk (CREMA-D, ODbL), one per line",
        description="Print the paths of the real CREMA-D recordings shipped in the package, "
        "e.g. emosdk run $(emosdk samples --kind av)",
    )
    smp.add_argument("--kind", choices=["all", "av", "audio"], default="all")
    smp.set_defaults(func=_samples)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("emosdk", args.verbose, lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
