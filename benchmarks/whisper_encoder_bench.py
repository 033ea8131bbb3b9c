"""Whisper audio encoder on ONE CPU core: ONNX Runtime variants beside torch eager, one run.

For each cut (encoder kept up to block 2, 3 or 4) the audio branch (Whisper stem + blocks,
layer mix, pooling, projection to 128) is timed on one 3 s window (1, 300, 80) at batch 1:

* torch eager, ``torch.set_num_threads(1)``;
* ONNX Runtime with ``intra_op_num_threads=1`` (the runtime's other session options), for the
  opset-23 graph (fused ``Attention``) at optimisation levels ALL (the runtime's default) and
  BASIC, the opset-18 graph, the fp16-stored-weights graph and the dynamic int8 graph.

Also the runtime's Whisper front end (numpy) on the same 3 s window. With ``--export DIR`` (the
folder of ``python -m train.export_speech``) the trained graphs are timed instead of graphs
exported here from the pretrained encoder with an untrained head (speed does not depend on the
weights' values; the JSON says which). File sizes are reported for the bundle budget.

    python benchmarks/whisper_encoder_bench.py --blocks 2 3 4
    python benchmarks/whisper_encoder_bench.py --export runs/speech/export --blocks 2

Writes benchmarks/results/whisper_encoder_speed.json (warm-up, then p50/p95/p99 of --runs calls,
the machine described, the load average before and after: the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = Path(__file__).parent / "results"


def timeit(fn, runs: int, warmup: int = 10) -> dict:
    """Wall-clock and CPU time (this thread's, ``time.thread_time``) per call, in ms.

    On a shared machine the wall clock includes the time other processes hold the core; the
    thread's CPU time does not (one intra-op thread: ONNX Runtime and torch compute in the
    calling thread), so it is the better estimate of the time on an idle core.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
    a, c = np.asarray(wall), np.asarray(cpu)
    return {
        "p50_ms": round(float(np.median(a)), 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "min_ms": round(float(a.min()), 3),
        "cpu_p50_ms": round(float(np.median(c)), 3),
        "cpu_p95_ms": round(float(np.percentile(c, 95)), 3),
        "runs": runs,
    }


def ort_session(path: Path, level: str = "ALL"):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = {
        "ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "BASIC": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    }[level]
    from emosdk.backends.onnxruntime import CPU_DISABLED_OPTIMIZERS  # as the runtime does

    return ort.InferenceSession(
        str(path),
        sess_options=so,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(CPU_DISABLED_OPTIMIZERS),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--export", type=Path, help="train.export_speech output folder (trained)")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--out", type=Path, default=RESULTS / "whisper_encoder_speed.json")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from emosdk.bench import environment
    from emosdk.export.quantize import fp16_weights
    from emosdk.features.whisper import WhisperMelParams, whisper_log_mel
    from train.export_speech import export_graphs, int8_dynamic
    from train.whisper import WhisperAudioBranch, encoder_state_dict

    torch.set_num_threads(1)
    from emosdk._malloc import tune_malloc

    tune_malloc()  # as the runtime's first Recognizer does (docs/design.md)
    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(48_000) * 0.05).astype(np.float32)
    params = WhisperMelParams()
    mel = whisper_log_mel(pcm, params)[None]  # (1, 300, 80)
    result: dict = {
        "what": "audio encoder (Whisper stem + blocks, layer mix, 2x pooling, projection) on one "
        "3 s window (1, 300, 80), batch 1, ONE thread",
        "environment": environment(),
        "load_average_before": [round(x, 2) for x in load_before],
        "graphs": "train.export_speech's (GELU as its tanh approximation unless the --export "
        "folder's report says otherwise); ONNX Runtime with the runtime's session options, "
        "CPU_DISABLED_OPTIMIZERS off",
        "frontend_ms": timeit(lambda: whisper_log_mel(pcm, params), args.runs),
        "cuts": {},
    }
    sd = encoder_state_dict()
    for n_blocks in args.blocks:
        branch = WhisperAudioBranch(n_blocks=n_blocks).eval()
        own = branch.encoder.state_dict()
        branch.encoder.load_state_dict({k: v for k, v in sd.items() if k in own})
        if args.export:
            folder, weights = args.export, "trained (train.export_speech)"
        else:
            folder = Path(tempfile.mkdtemp(prefix=f"whisper_b{n_blocks}_"))
            weights = "pretrained encoder, untrained mix/projection (speed only)"
            paths = export_graphs(branch, folder)
            fp16_weights(paths["opset18"], folder / "audio_encoder.fp16w.onnx")
            int8 = int8_dynamic(paths["opset23"], folder / "audio_encoder.int8.onnx")
            fp16_weights(int8, int8)
        x = torch.from_numpy(mel)
        with torch.no_grad():
            row = {
                "weights": weights,
                "params_exported": sum(
                    p.numel() for n, p in branch.named_parameters() if not n.startswith("head.")
                ),
                "torch_eager": timeit(lambda b=branch, x=x: b(x), args.runs),
            }
        for name, file, level in (
            ("ort_opset23_all", "audio_encoder.opset23.onnx", "ALL"),
            ("ort_opset23_basic", "audio_encoder.opset23.onnx", "BASIC"),
            ("ort_opset18_all", "audio_encoder.opset18.onnx", "ALL"),
            ("ort_fp16w_all", "audio_encoder.fp16w.onnx", "ALL"),
            ("ort_int8_all", "audio_encoder.int8.onnx", "ALL"),
            ("ort_int8_basic", "audio_encoder.int8.onnx", "BASIC"),
        ):
            path = folder / file
            if not path.exists():
                continue
            sess = ort_session(path, level)
            row[name] = timeit(lambda s=sess: s.run(None, {"logmel": mel}), args.runs)
            row[name]["mb"] = round(path.stat().st_size / 1e6, 2)
        result["cuts"][f"blocks_{n_blocks}"] = row
        print(
            json.dumps(
                {
                    f"blocks_{n_blocks}": {
                        k: (v["p50_ms"], v["cpu_p50_ms"]) if isinstance(v, dict) else v
                        for k, v in row.items()
                    }
                }
            ),
            flush=True,
        )
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result["command"] = "python benchmarks/whisper_encoder_bench.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
