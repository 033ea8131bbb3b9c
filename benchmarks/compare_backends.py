"""torch eager vs ONNX Runtime fp32 vs ONNX Runtime int8 on the default model, in one run.

Times each of the three graphs and the whole window (audio encoder + 15 faces + fusion) at
batch 1 on a 3 s window, and, with --manifest, the macro-F1 of fp32 and int8 on held-out files.
Writes JSON with the machine described to benchmarks/results/compare_backends.json.

    python tools/make_manifest.py cremad --partition 1 --split Test --out /tmp/p1_test.csv
    python benchmarks/compare_backends.py --checkpoints /tmp/emosdk_seed --manifest /tmp/p1_test.csv

torch eager needs the training checkpoints (state dicts written by `python -m train.train_seed
--out DIR`); without them the torch timings use the same architecture with random weights (speed
does not depend on the weights; the JSON says which).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = Path(__file__).parent / "results"


def timeit(fn, runs: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    t = np.asarray(times)
    return {
        "p50_ms": float(np.median(t)),
        "p95_ms": float(np.percentile(t, 95)),
        "mean_ms": float(t.mean()),
        "runs": runs,
    }


def torch_modules(bundle, checkpoints: Path | None):
    """The default model's torch modules: trained weights from ``checkpoints`` when given
    (a ``python -m train.train_seed --out`` folder), else the same architecture at random."""
    from train.checkpoints import build_modules, load_checkpoints
    from train.models import AudioEncoderGraph
    from train.train_seed import Config

    if checkpoints:
        modules = load_checkpoints(checkpoints, bundle.audio.n_mels)
        weights = f"trained ({checkpoints})"
    else:
        modules = build_modules(vars(Config()), bundle.audio.n_mels)
        weights = "random (timing only)"
    for m in modules.values():
        m.eval()
    return AudioEncoderGraph(modules["audio"]).eval(), modules["face"], modules["fusion"], weights


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--checkpoints", type=Path, help="train_seed output folder")
    p.add_argument("--manifest", type=Path, help="held-out files for the fp32/int8 macro-F1")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "compare_backends.json")
    args = p.parse_args()

    import onnxruntime as ort
    import torch

    from emosdk import Recognizer
    from emosdk.evaluation import accuracy, environment
    from emosdk.export.quantize import quantize_bundle
    from emosdk.models import load_model, resolve_model

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    bundle_dir = tmp / "bundle"
    shutil.copytree(resolve_model(args.model), bundle_dir)
    if "int8" not in load_model(bundle_dir).meta.get("variants", {}):
        quantize_bundle(bundle_dir)
    bundle = load_model(bundle_dir)
    meta = bundle.meta
    window_s, fps = bundle.stream.window_s, bundle.stream.video_fps
    n_frames = bundle.audio.num_frames(int(window_s * bundle.audio.sample_rate))
    tv = int(round(window_s * fps))
    rng = np.random.default_rng(0)
    mel = rng.standard_normal((1, n_frames, bundle.audio.n_mels)).astype(np.float32) - 5
    faces = rng.standard_normal((tv, 1, bundle.face.size, bundle.face.size)).astype(np.float32)

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the runtime does
    sessions = {}
    for precision, files in (
        ("fp32", {r: g.file for r, g in bundle.graphs.items()}),
        ("int8", meta["variants"]["int8"]),
    ):
        sessions[precision] = {
            r: ort.InferenceSession(str(bundle_dir / f), so, providers=["CPUExecutionProvider"])
            for r, f in files.items()
        }
    a_emb = sessions["fp32"]["audio_encoder"].run(None, {"logmel": mel})[0]
    f_emb = sessions["fp32"]["face_encoder"].run(None, {"face": faces})[0]
    fusion_feeds = {
        "audio": a_emb,
        "audio_mask": np.ones(a_emb.shape[:2], np.float32),
        "video": np.ascontiguousarray(f_emb[None]),
        "video_mask": np.ones((1, tv), np.float32),
    }

    def ort_run(precision: str, role: str, feeds: dict):
        return lambda: sessions[precision][role].run(None, feeds)

    def ort_window(precision: str):
        s = sessions[precision]

        def run():
            a = s["audio_encoder"].run(None, {"logmel": mel})[0]
            f = s["face_encoder"].run(None, {"face": faces})[0]
            s["fusion"].run(
                None,
                {
                    "audio": a,
                    "audio_mask": np.ones(a.shape[:2], np.float32),
                    "video": np.ascontiguousarray(f[None]),
                    "video_mask": np.ones((1, tv), np.float32),
                },
            )

        return run

    feeds = {
        "audio_encoder": {"logmel": mel},
        "face_encoder": {"face": faces},
        "fusion": fusion_feeds,
    }
    results: dict = {"graphs": {}, "window": {}}
    a_t, f_t, fu_t, weights = torch_modules(bundle, args.checkpoints)
    t_feeds = {k: torch.from_numpy(v) for k, v in fusion_feeds.items()}
    with torch.inference_mode():
        torch_fns = {
            "audio_encoder": lambda: a_t(torch.from_numpy(mel)),
            "face_encoder": lambda: f_t(torch.from_numpy(faces)),
            "fusion": lambda: fu_t(
                t_feeds["audio"], t_feeds["audio_mask"], t_feeds["video"], t_feeds["video_mask"]
            ),
        }

        def torch_window():
            a = a_t(torch.from_numpy(mel))
            f = f_t(torch.from_numpy(faces))[0]
            fu_t(a, torch.ones(a.shape[:2]), f[None], torch.ones(1, tv))

        for role in ("audio_encoder", "face_encoder", "fusion"):
            results["graphs"][role] = {
                "torch_eager": timeit(torch_fns[role], args.runs),
                "ort_fp32": timeit(ort_run("fp32", role, feeds[role]), args.runs),
                "ort_int8": timeit(ort_run("int8", role, feeds[role]), args.runs),
            }
        results["window"] = {
            "torch_eager": timeit(torch_window, args.runs),
            "ort_fp32": timeit(ort_window("fp32"), args.runs),
            "ort_int8": timeit(ort_window("int8"), args.runs),
        }
    for block in [*results["graphs"].values(), results["window"]]:
        block["ratios"] = {
            "ort_fp32_vs_torch": block["torch_eager"]["p50_ms"] / block["ort_fp32"]["p50_ms"],
            "ort_int8_vs_ort_fp32": block["ort_fp32"]["p50_ms"] / block["ort_int8"]["p50_ms"],
        }
    if args.manifest:
        acc = {}
        for precision in ("fp32", "int8"):
            with Recognizer(model=bundle_dir, precision=precision, smoothing="none") as rec:
                r = accuracy(rec, args.manifest, "auto", None, robustness=False)
            acc[precision] = {k: r[k] for k in ("n", "accuracy", "macro_f1", "micro_f1", "uar")}
        acc["macro_f1_change_int8"] = acc["int8"]["macro_f1"] - acc["fp32"]["macro_f1"]
        acc["manifest"] = str(args.manifest)
        results["accuracy"] = acc
    out = {
        "benchmark": "compare_backends",
        "command": " ".join(["python", "benchmarks/compare_backends.py", *sys.argv[1:]]),
        "model": {"name": bundle.name, "version": bundle.version},
        "shapes": {
            "batch": 1,
            "window_s": window_s,
            "logmel_frames": n_frames,
            "audio_steps": int(a_emb.shape[1]),
            "faces": tv,
        },
        "threads": args.threads,
        "torch": {"version": torch.__version__, "weights": weights},
        "environment": environment(),
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"{'graph':<14} {'torch ms':>9} {'ORT fp32':>9} {'ORT int8':>9} {'fp32/torch':>11} "
        f"{'int8/fp32':>10}"
    )
    for name, b in [*results["graphs"].items(), ("window", results["window"])]:
        print(
            f"{name:<14} {b['torch_eager']['p50_ms']:9.2f} {b['ort_fp32']['p50_ms']:9.2f} "
            f"{b['ort_int8']['p50_ms']:9.2f} {b['ratios']['ort_fp32_vs_torch']:10.2f}x "
            f"{b['ratios']['ort_int8_vs_ort_fp32']:9.2f}x"
        )
    if "accuracy" in results:
        a = results["accuracy"]
        print(
            f"macro-F1 fp32 {a['fp32']['macro_f1']:.4f}  int8 {a['int8']['macro_f1']:.4f}  "
            f"change {a['macro_f1_change_int8']:+.4f}  (n={a['fp32']['n']})"
        )
    print(f"-> {args.out}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
