"""A/B timing of ONNX graphs on ONE core: each graph, or each graph with and without ONNX Runtime
graph fusions, run in turn on the same input, so that the machine's drift hits every candidate
alike (how docs/speech.md's per-change savings of the Whisper audio encoder were measured).

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/ort_ab.py OLD.onnx NEW.onnx
    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/ort_ab.py G.onnx --disable SkipLayerNormFusion

Random inputs of the graph's input shapes (symbolic axes: ``--axis NAME=SIZE``, default B=1,
frames=300, Ta=75, Tv=45; masks are ones). Prints the largest output difference to the first
candidate and p50 / p95 of this thread's CPU time per call; ``--out`` writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

AXES = {"B": 1, "frames": 300, "Ta": 75, "Tv": 45}


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("graphs", type=Path, nargs="+")
    p.add_argument("--disable", nargs="+", default=[], help="fusions for a second session each")
    p.add_argument("--axis", action="append", default=[], help="NAME=SIZE of a symbolic axis")
    p.add_argument("--runs", type=int, default=600)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    axes = {**AXES, **{k: int(v) for k, v in (a.split("=") for a in args.axis)}}

    def session(path: Path, disabled: list[str]):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(
            str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
        )

    cands = {}
    for g in args.graphs:
        cands[f"{g} (all fusions)"] = session(g, [])
        if args.disable:
            cands[f"{g} (without {', '.join(args.disable)})"] = session(g, args.disable)
    rng = np.random.default_rng(0)
    first = next(iter(cands.values()))
    feeds = {}
    for i in first.get_inputs():
        shape = [d if isinstance(d, int) else axes.get(d, 1) for d in i.shape]
        x = np.ones(shape) if "mask" in i.name else rng.standard_normal(shape)
        feeds[i.name] = x.astype(np.float32)
    outs = {k: s.run(None, feeds)[0] for k, s in cands.items()}
    ref = next(iter(outs.values()))
    for s in cands.values():
        for _ in range(20):
            s.run(None, feeds)
    times: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(args.runs):
        for k, s in cands.items():
            t = time.thread_time()
            s.run(None, feeds)
            times[k].append(time.thread_time() - t)
    result = {
        k: {
            "cpu_p50_ms": round(1000 * float(np.median(v)), 3),
            "cpu_p95_ms": round(1000 * float(np.percentile(v, 95)), 3),
            "max_abs_diff_to_first": float(np.abs(outs[k] - ref).max()),
        }
        for k, v in times.items()
    }
    for k, r in result.items():
        print(f"{k}: p50 {r['cpu_p50_ms']} ms, p95 {r['cpu_p95_ms']} ms, "
              f"max |diff| {r['max_abs_diff_to_first']:.2e}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"runs": args.runs, "candidates": result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
