"""End-to-end real-time factor of the runtime on one CPU core (issue 17's speed goal: <= 0.05).

Streams the six real CREMA-D clips shipped in the package, in a loop, through
``Recognizer.stream`` for ``--seconds`` of audio: voice activity, the audio front end and
encoder every hop, face detection, alignment and the face encoder on the frames the model
samples, fusion, smoothing. The clips are decoded once beforehand (a live source has no file to
decode; decoding is timed apart), then replayed with their real timestamps, so what is timed is
the work a live stream does. The real-time factor is processing time over audio time, in wall
time and in this process's CPU time (the machine may be shared: CPU time is the steadier
figure). Per-stage p50/p95 come from the results' latency breakdown; peak RSS from the OS.

Run it pinned to one core with one thread per graph, as the goal is stated:

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/rtf_bench.py --seconds 180 \\
        --out benchmarks/results/rtf_one_core.json

``--model`` picks another bundle; ``--face-mesh`` adds MediaPipe's landmark tracking.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from emosdk import Recognizer, samples
from emosdk.capture import ArraySource
from emosdk.capture.media import read_media
from emosdk.evaluation import environment, percentiles


def decoded_clips() -> tuple[list[tuple[np.ndarray, list, float]], float]:
    """(16 kHz audio, frames, fps) of each shipped AV clip, and the decoding time in seconds."""
    out, t0 = [], time.perf_counter()
    for path in samples.paths():
        if path.suffix != ".flv":
            continue
        audio, frames = read_media(path)
        span = (frames[-1][0] - frames[0][0]) / 1000.0
        out.append((audio, [f for _, f in frames], (len(frames) - 1) / span))
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--seconds", type=float, default=180.0, help="audio time to stream")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per graph")
    p.add_argument("--face-mesh", action="store_true", help="landmark tracking on")
    p.add_argument("--precision", default="fp32", help="fp32 or int8 (the bundle's int8 variants)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    clips, decode_s = decoded_clips()
    clip_s = sum(len(a) / 16000 for a, _, _ in clips)
    with Recognizer(
        model=args.model,
        num_threads=args.threads,
        face_mesh=args.face_mesh,
        precision=args.precision,
        providers=("CPUExecutionProvider",) if args.precision == "int8" else None,
    ) as rec:
        list(rec.stream(source=ArraySource(audio=clips[0][0], frames=clips[0][1])))  # warm up
        stages: dict[str, list[float]] = {}
        totals: list[float] = []
        audio_s = wall = cpu = 0.0
        results = loops = 0
        while audio_s < args.seconds:
            for audio, frames, fps in clips:
                src = ArraySource(audio=audio, frames=frames, fps=fps)
                w0, c0 = time.perf_counter(), time.process_time()
                got = list(rec.stream(source=src))
                wall += time.perf_counter() - w0
                cpu += time.process_time() - c0
                audio_s += len(audio) / 16000
                results += len(got)
                for r in got:
                    totals.append(r.latency.total_ms)
                    for name, ms in r.latency.stages.items():
                        stages.setdefault(name, []).append(ms)
            loops += 1
        hop_s = rec.hop_s
    out = {
        "command": "python benchmarks/rtf_bench.py " + " ".join(argv or sys.argv[1:]),
        "model": args.model,
        "face_mesh": args.face_mesh,
        "precision": args.precision,
        "threads_per_graph": args.threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "audio_s": audio_s,
        "loops": loops,
        "results": results,
        "rtf_wall": wall / audio_s,
        "rtf_cpu": cpu / audio_s,
        "decode_rtf": decode_s / clip_s,
        "per_result_total_ms": percentiles(totals),
        "per_stage_ms": {k: percentiles(v) for k, v in sorted(stages.items())},
        "hop_s": hop_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "load_average": os.getloadavg(),
        "environment": environment(),
    }
    print(
        f"RTF {out['rtf_wall']:.3f} wall, {out['rtf_cpu']:.3f} CPU over {audio_s:.0f} s of audio "
        f"({results} results); decoding the files would add {out['decode_rtf']:.3f}; "
        f"load average {out['load_average'][0]:.1f}"
    )
    for name, pc in out["per_stage_ms"].items():
        print(f"  {name:<16} p50 {pc['p50']:7.2f} ms  p95 {pc['p95']:7.2f} ms  (n={pc['n']})")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
