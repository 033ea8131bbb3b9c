"""Fused masked attention vs torch's scaled_dot_product_attention at the fusion model's shapes.

For batch 1..64 and windows of 1..6 s, times the four attentions of the fusion model (d_model 64,
4 heads, head_dim 16; audio steps Ta = (100 * s - 2) // 4 and video frames Tv = round(5 * s), each
with the model's always-present token prepended): audio self-attention, video self-attention,
audio queries over video keys and video queries over audio keys, with about 20% of the keys
missing. Implementations: torch SDPA with a boolean key mask (the training path), the Triton
kernel and the compiled CUDA kernel (each when available), in fp16 and fp32.

Each measurement warms up, then times single calls with CUDA events (p50/p95/mean in
microseconds) and checks the result against a float64 reference (max abs error). Writes JSON with
the machine described to benchmarks/results/attention_bench.json.

    tools/build_kernels.sh && EMOSDK_NATIVE_DIR=build/kernels python benchmarks/attention_bench.py

Without a CUDA GPU it exits with a message and writes nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = Path(__file__).parent / "results"

HEADS, HEAD_DIM = 4, 16
BATCHES = (1, 2, 4, 8, 16, 32, 64)
WINDOWS_S = (1, 2, 3, 4, 5, 6)


def lengths(window_s: float) -> tuple[int, int]:
    """(audio steps, video frames) of a window, without the prepended token."""
    frames = int(100 * window_s) - 2  # 25 ms / 10 ms hop log-mel frames of the window
    return frames // 4, round(window_s * 5)


def kinds(window_s: float) -> dict[str, tuple[int, int]]:
    ta, tv = (n + 1 for n in lengths(window_s))  # + the always-present token
    return {
        "audio_self": (ta, ta),
        "video_self": (tv, tv),
        "audio_to_video": (ta, tv),
        "video_to_audio": (tv, ta),
    }


def environment(torch) -> dict:
    from emosdk import __version__, native

    props = torch.cuda.get_device_properties(0)
    env = {
        "emosdk": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "gpu": props.name,
        "gpu_capability": f"{props.major}.{props.minor}",
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "gpu_sm_count": props.multi_processor_count,
        "native": native.status(),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    return env


def time_us(torch, fn, warmup: int, iters: int) -> dict:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    t = np.asarray(times)
    return {
        "p50_us": round(float(np.median(t)), 2),
        "p95_us": round(float(np.percentile(t, 95)), 2),
        "mean_us": round(float(t.mean()), 2),
        "iters": iters,
    }


def measure_case(torch, attention_op, impls: dict, case: dict, gen, args) -> list[dict]:
    """Time every implementation on one shape, in fp16 and fp32, on the same random inputs."""
    batch, tq, tk = case["batch"], case["q_len"], case["kv_len"]
    shape_q, shape_k = (batch, HEADS, tq, HEAD_DIM), (batch, HEADS, tk, HEAD_DIM)
    q64 = torch.randn(shape_q, generator=gen, device="cuda", dtype=torch.float64)
    k64 = torch.randn(shape_k, generator=gen, device="cuda", dtype=torch.float64)
    v64 = torch.randn(shape_k, generator=gen, device="cuda", dtype=torch.float64)
    mask = (torch.rand(batch, tk, generator=gen, device="cuda") > 0.2).float()
    mask[:, 0] = 1.0  # the always-present token
    scale = HEAD_DIM**-0.5
    ref = attention_op.reference_attention(q64, k64, v64, mask, scale)
    rows = []
    for dtype in (torch.float16, torch.float32):
        q, k, v = (x.to(dtype) for x in (q64, k64, v64))
        line = []
        for name, fn in impls.items():
            err = (fn(q, k, v, mask, scale).double() - ref).abs().max().item()
            timing = time_us(torch, lambda: fn(q, k, v, mask, scale), args.warmup, args.iters)  # noqa: B023
            dtype_name = str(dtype).split(".")[-1]
            rows.append({**case, "dtype": dtype_name, "impl": name, "max_abs_err_vs_fp64": err})
            rows[-1].update(timing)
            line.append(f"{name}={timing['p50_us']:.1f}us")
        print(
            f"{case['window_s']} s {case['kind']:15s} B={batch:3d} {dtype_name}: " + "  ".join(line)
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=RESULTS / "attention_bench.json")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="batches 1, 16, 64 and windows 1, 3, 6")
    args = ap.parse_args(argv)

    try:
        import torch
    except ImportError:
        print(
            "attention_bench: needs torch (pip install 'emosdk[export]'); nothing written",
            file=sys.stderr,
        )
        return 1
    if not torch.cuda.is_available():
        print(
            "attention_bench: no CUDA GPU here (torch.cuda.is_available() is False); this "
            "benchmark times GPU kernels only. Nothing written.",
            file=sys.stderr,
        )
        return 1

    from emosdk import native
    from emosdk.kernels import attention_op

    impls = {
        "sdpa": lambda q, k, v, m, s: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=(m != 0)[:, None, None, :], scale=s
        )
    }
    if native.triton_installed():
        impls["triton"] = attention_op.triton_attention
    if native.attention_library() is not None:
        impls["cuda"] = attention_op.cuda_kernel_attention
    missing = sorted({"triton", "cuda"} - set(impls))
    if missing:
        print(f"attention_bench: not timed (not available): {missing}. {native.BUILD_HINT}")

    batches = (1, 16, 64) if args.quick else BATCHES
    windows = (1, 3, 6) if args.quick else WINDOWS_S
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for window in windows:
        for kind, (tq, tk) in kinds(window).items():
            for batch in batches:
                case = {"window_s": window, "kind": kind, "batch": batch, "q_len": tq, "kv_len": tk}
                rows += measure_case(torch, attention_op, impls, case, gen, args)
    result = {
        "benchmark": "attention_bench",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(torch),
        "config": {
            "heads": HEADS,
            "head_dim": HEAD_DIM,
            "batches": list(batches),
            "windows_s": list(windows),
            "missing_keys": 0.2,
            "warmup": args.warmup,
            "iters": args.iters,
            "impls": list(impls),
            "not_available": missing,
        },
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
