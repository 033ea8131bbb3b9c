"""``emosdk-bench``: latency, throughput, memory and accuracy across backends and precisions.

The JSON keys and the flags are a contract (ARCHITECTURE section 7; schema in docs/bench.md).
The measuring itself lives in :mod:`emosdk.evaluation`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ._cli import ProgressLine, run_command
from .config import RecognizerConfig
from .errors import EmosdkError, InputError
from .evaluation import (
    VIDEO_EXT,
    accuracy,
    default_clips_manifest,
    environment,
    latency,
    peak_rss_mb,
    read_manifest,
)
from .models import load_model
from .recognizer import Recognizer

logger = logging.getLogger("emosdk")

SCHEMA_VERSION = 1


# -- the table ---------------------------------------------------------------------------------
TORCH_REASON = (
    "the runtime never imports torch; torch eager is measured by benchmarks/compare_backends.py "
    "(needs emosdk[export] and the training checkpoints)"
)
ROWS = (
    ("onnxruntime", "fp32"),
    ("onnxruntime", "fp16"),
    ("onnxruntime", "int8"),
    ("tensorrt", "fp16"),
)


def bench_row(model: str, backend: str, engine: str, manifest: Path, clip: Path, runs: int) -> dict:
    row = {"backend": backend, "precision": engine, "status": "ok", "reason": None}
    if backend == "torch":
        return {**row, "status": "unavailable", "reason": TORCH_REASON}
    try:
        with Recognizer(
            RecognizerConfig(model=model, backend=backend, precision=engine, smoothing="none")
        ) as rec:
            row["size_mb"] = round(
                sum(g.path.stat().st_size for g in rec.graphs.values()) / 1e6, 2
            )  # the graphs this precision runs
            row["device"] = sorted({g.device for g in rec.graphs.values()})
            acc = accuracy(rec, manifest, "auto", None, robustness=False)
            lat = latency(rec, clip, runs=runs, batches=(1,))
            row.update(
                accuracy=acc["accuracy"],
                macro_f1=acc["macro_f1"],
                n=acc["n"],
                latency_p50_ms=lat["warm_ms"]["total"]["p50"],
                latency_p95_ms=lat["warm_ms"]["total"]["p95"],
                windows_per_s=lat["throughput"]["1"]["windows_per_s"],
                details={"accuracy": acc, "latency": lat},
            )
    except EmosdkError as e:
        row.update(status="unavailable", reason=str(e))
    return row


def print_table(rows: list[dict], file=None) -> None:
    file = file or sys.stdout
    head = (
        f"{'':2} {'Backend/precision':<22} {'Status':<11} {'Size MB':>8} {'Acc':>6} "
        f"{'MacroF1':>8} {'p50 ms':>8} {'p95 ms':>8} {'win/s':>7}"
    )
    print(head, file=file)
    for r in rows:
        ok = r["status"] == "ok"

        def f(key: str, fmt: str, r: dict = r, ok: bool = ok) -> str:
            return format(r[key], fmt) if ok and r.get(key) is not None else "-"

        print(
            f"{'✅' if ok else '❌'} {r['backend'] + ' ' + r['precision']:<22} "
            f"{r['status']:<11} {f('size_mb', '8.2f'):>8} {f('accuracy', '6.3f'):>6} "
            f"{f('macro_f1', '8.3f'):>8} {f('latency_p50_ms', '8.1f'):>8} "
            f"{f('latency_p95_ms', '8.1f'):>8} {f('windows_per_s', '7.1f'):>7}",
            file=file,
        )
    for r in rows:
        if r["status"] != "ok":
            print(f"   {r['backend']} {r['precision']}: {r['reason']}", file=file)
    print(
        "Legend: ✅ ran, ❌ cannot run on this machine (reason above). Acc and MacroF1 over "
        "the manifest's files, one prediction per file; p50/p95: latency per streamed result "
        "(one hop: audio front-end and encoder, the hop's faces, fusion), warm; win/s: windows "
        "per second through the three graphs at batch 1.",
        file=file,
    )


def check_floors(floors: list[str], values: dict) -> list[str]:
    failures = []
    for spec in floors:
        if "=" not in spec:
            raise InputError(f"--floor: expected METRIC=VALUE, got {spec!r}")
        key, val = spec.split("=", 1)
        try:
            bound = float(val)
        except ValueError:
            raise InputError(f"--floor: {val!r} is not a number") from None
        got = values.get(key)
        if got is None:
            raise InputError(f"--floor: unknown metric {key!r}; known: {sorted(values)}")
        if got < bound:
            failures.append(f"{key} = {got:.4f} < floor {bound}")
    return failures


# -- command line ------------------------------------------------------------------------------
def first_video(manifest: Path, model: str) -> Path:
    """The first video of a manifest: the clip timed for latency by default."""
    rows, _ = read_manifest(manifest, load_model(model).labels)
    for p, _ in rows:
        if p.suffix.lower() in VIDEO_EXT:
            return p
    raise InputError(f"{manifest}: no video file to time; pass --clip")


def _config(args: argparse.Namespace) -> RecognizerConfig:
    return RecognizerConfig(
        model=args.model, backend=args.backend, precision=args.engine or "fp32", smoothing="none"
    )


def _report(args: argparse.Namespace, out: dict, human) -> None:
    """Print ``out`` as JSON (--json) or as ``human()`` text, and write it to --out."""
    text = json.dumps(out, indent=2, default=float)
    if args.json:
        print(text)
    else:
        human()
    if args.out:
        Path(args.out).write_text(text + "\n")


def _gate(floors: list[str], values: dict) -> int:
    """1 when a --floor is not met (each failure printed), else 0."""
    failures = check_floors(floors, values)
    for msg in failures:
        print(f"emosdk-bench: floor failed: {msg}", file=sys.stderr)
    return 1 if failures else 0


def cmd_default(args: argparse.Namespace) -> int:
    manifest = args.manifest or default_clips_manifest()
    clip = args.clip or first_video(manifest, args.model)
    combos = [
        c
        for c in ROWS
        if (args.engine is None or c[1] == args.engine) and args.backend in ("auto", c[0])
    ]
    if args.backend == "torch":
        combos = [("torch", args.engine or "fp32")]
    # --engine E (or --backend torch): also the CPU fp32 reference row, so that something
    # comparable still runs on machines where the requested combination cannot
    if ("onnxruntime", "fp32") not in combos and args.backend in ("auto", "torch"):
        combos.append(("onnxruntime", "fp32"))
    rows = [bench_row(args.model, b, e, manifest, clip, args.runs) for b, e in combos]
    result = {
        "schema_version": SCHEMA_VERSION,
        "command": "bench",
        "model": args.model,
        "manifest": str(manifest),
        "rows": rows,
        "environment": environment(),
        "peak_rss_mb": peak_rss_mb(),
    }
    ran = [r for r in rows if r["status"] == "ok"]
    _report(args, result, lambda: print_table(rows))
    if not ran:
        return 1
    return _gate(args.floor, {k: ran[0][k] for k in ("accuracy", "macro_f1", "windows_per_s")})


def cmd_accuracy(args: argparse.Namespace) -> int:
    if args.manifest is None:
        raise InputError("accuracy: --manifest PATH is required")
    progress = _progress(args)
    with Recognizer(_config(args)) as rec:
        out = accuracy(rec, args.manifest, args.modality, args.plots, progress=progress)
    if progress is not None:
        progress.close()
    out.update(
        schema_version=SCHEMA_VERSION,
        command="accuracy",
        model=args.model,
        environment=environment(),
    )

    def human() -> None:
        print(
            f"n={out['n']} skipped={out['skipped']['total']} accuracy={out['accuracy']:.4f} "
            f"macro_f1={out['macro_f1']:.4f} micro_f1={out['micro_f1']:.4f} "
            f"uar={out['uar']:.4f}"
        )
        for lab, pc in out["per_class"].items():
            print(
                f"  {lab:<10} P={pc['precision']:.3f} R={pc['recall']:.3f} "
                f"F1={pc['f1']:.3f} n={pc['support']}"
            )

    _report(args, out, human)
    return _gate(args.floor, {k: out[k] for k in ("accuracy", "macro_f1", "micro_f1", "uar")})


def cmd_latency(args: argparse.Namespace) -> int:
    clip = args.clip or first_video(default_clips_manifest(), args.model)
    with Recognizer(_config(args)) as rec:
        out = latency(rec, clip, runs=args.runs, batches=tuple(args.batch))
        out["device"] = sorted({g.device for g in rec.graphs.values()})
    out.update(
        schema_version=SCHEMA_VERSION,
        command="latency",
        model=args.model,
        backend=args.backend,
        precision=args.engine or "fp32",
        environment=environment(),
    )

    def human() -> None:
        print(
            f"{'stage':<18} {'p50':>8} {'p95':>8} {'p99':>8}   (warm, ms; cold total "
            f"{out['cold_ms']['total']:.1f} ms)"
        )
        for stage, p in out["warm_ms"].items():
            print(f"{stage:<18} {p['p50']:8.2f} {p['p95']:8.2f} {p['p99']:8.2f}")
        for b, t in out["throughput"].items():
            print(f"batch {b:>3}: {t['windows_per_s']:.1f} windows/s (graphs only)")
        print(f"peak RSS {out['peak_rss_mb']:.0f} MB")

    _report(args, out, human)
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    """The corruption benchmark (docs/robustness.md)."""
    from .robustness import plot, run, table

    if args.manifest is None:
        raise InputError("robustness: --manifest PATH is required")
    progress = _progress(args)
    reference = json.loads(args.reference.read_text()) if args.reference else None
    config = _config(args).replace(num_threads=args.threads)
    with Recognizer(config) as rec:
        out = run(
            rec,
            args.manifest,
            args.modality,
            corruptions=args.corruptions,
            severities=args.severities,
            limit=args.limit,
            seed=args.seed,
            progress=progress,
            cache=args.cache,
            reference=reference,
        )
    if progress is not None:
        progress.close()
    out.update(model=args.model, backend=args.backend, precision=args.engine or "fp32")
    out["environment"] = environment()
    if args.plots is not None:
        stem = args.out.stem if args.out else "robustness"
        out["plots"] = plot(out, args.plots, stem)

    _report(args, out, lambda: print(table(out)))
    return 0


def _progress_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr (files done, rate, time left); default: when stderr is a terminal",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def _progress(args: argparse.Namespace) -> ProgressLine | None:
    """A progress line on stderr, as --progress/--quiet and the terminal say."""
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    return ProgressLine() if show and not args.quiet else None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default="default", help="bundled model name or bundle folder")
    common.add_argument(
        "--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt", "torch"]
    )
    common.add_argument(
        "--engine",
        choices=["fp32", "fp16", "int8"],
        default=None,
        help="precision (default: every precision for the table, fp32 otherwise)",
    )
    common.add_argument("--json", action="store_true", help="print the documented JSON")
    common.add_argument("--out", type=Path, help="also write the JSON to this file")
    common.add_argument(
        "--floor",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="exit non-zero when METRIC is below VALUE (e.g. macro_f1=0.5)",
    )
    common.add_argument("--runs", type=int, default=30, help="warm latency runs")
    common.add_argument("-v", "--verbose", action="store_true")
    p = argparse.ArgumentParser(
        prog="emosdk-bench",
        parents=[common],
        description="Latency and accuracy of emosdk models on this machine. Without a "
        "subcommand: both, on the bundled model and the bundled real clips, as a table.",
    )
    p.add_argument("--manifest", type=Path, help="CSV with file,label (default: bundled clips)")
    p.add_argument("--clip", type=Path, help="clip timed for latency (default: a bundled clip)")
    sub = p.add_subparsers(dest="command")
    a = sub.add_parser(
        "accuracy",
        parents=[common],
        help="accuracy on a manifest of files",
        description="Accuracy, macro-F1, micro-F1, UAR, per class and confusion "
        "on a manifest CSV (file,label[,speaker]) of audio files, face images "
        "or videos; per modality condition and a robustness curve for videos.",
    )
    a.add_argument("--manifest", type=Path, help="CSV with file,label")
    a.add_argument("--modality", choices=["auto", "audio", "video", "av"], default="auto")
    a.add_argument("--plots", type=Path, help="folder for confusion.png and robustness.png")
    _progress_options(a)
    rb = sub.add_parser(
        "robustness",
        parents=[common],
        help="accuracy under corrupted audio and video",
        description="The manifest's files corrupted at five severities (noise, babble, reverb, "
        "telephone, Opus, clipping, low gain; darkening, sensor noise, blur, JPEG, small and "
        "half-covered faces, frame-rate drops): accuracy and macro-F1 per corruption and "
        "severity, relative to clean (docs/robustness.md).",
    )
    rb.add_argument("--manifest", type=Path, help="CSV with file,label[,speaker]")
    rb.add_argument("--modality", choices=["audio", "video", "av"], default="audio")
    rb.add_argument("--corruptions", nargs="+", metavar="NAME", help="default: all of the modality")
    rb.add_argument("--severities", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    rb.add_argument("--limit", type=int, default=0, help="the first N files (0: all)")
    rb.add_argument("--seed", type=int, default=0)
    rb.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per graph")
    rb.add_argument("--cache", type=Path, help="JSONL of per-file predictions: resumes a run")
    rb.add_argument("--reference", type=Path, help="a reference model's JSON: adds CE and mCE")
    rb.add_argument("--plots", type=Path, help="folder for the macro-F1 curves (PNG)")
    _progress_options(rb)
    lat = sub.add_parser(
        "latency",
        parents=[common],
        help="per-stage latency and throughput",
        description="Per-stage latency (cold and warm p50/p95/p99), windows "
        "per second at batch sizes, peak RSS and the environment.",
    )
    lat.add_argument("--clip", type=Path, help="clip to time (default: a bundled clip)")
    lat.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.backend == "torch" and args.command is not None:
        print(f"emosdk-bench: error: {TORCH_REASON}", file=sys.stderr)
        return 2
    commands = {"accuracy": cmd_accuracy, "latency": cmd_latency, "robustness": cmd_robustness}
    return run_command(
        "emosdk-bench", args.verbose, lambda: commands.get(args.command, cmd_default)(args)
    )


if __name__ == "__main__":
    sys.exit(main())
