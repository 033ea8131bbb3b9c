"""Evaluate a bundle's face encoder (its ONNX graph, through onnxruntime) on FER2013.

Reads the faces the way training does (``train.data.load_fer2013``: the runtime's
``FaceParams`` crop size and normalisation), runs ``face_encoder.onnx`` and scores its
``face_logits`` (7 FER2013 classes) on PublicTest: the split that selects the epoch and the figure
the issue asks for (PrivateTest, FER2013's report split, is held back from ``../shared/data``).

Test-time views (``--tta``, several comma-separated; each is reported):

* ``none``: the face as it is;
* ``flip``: the mean class probabilities of the face and its mirror image;
* ``10crop``: the mean over 10 views: the face and 4 copies shifted by 2 pixels
  (up, down, left, right; reflect padding, as in training's augmentation), each also mirrored.

    python -m train.evaluate_face --bundle sdk/emosdk/models/bundled/default \\
        --tta none,flip,10crop --out-json docs/results/fer2013_face.json

``--motion-blur`` also scores one view of every face under motion blur over 15 % of its width
(the robustness benchmark's severity 3, as :mod:`train.face_robust` reports it), reported as
the view ``motion_blur_s3``.

``--latency N`` also times the graph on one face at a time, N runs after a warm-up, with one
onnxruntime thread (``intra_op_num_threads=1``, sequential execution), as the runtime embeds the
faces of a frame; the JSON gets p50/p95/min in ms, the ONNX size and the machine (CPU count,
load average: the development machine is shared, so the minimum is the least disturbed figure).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from emosdk.features.face import FaceParams
from emosdk.metrics import classification_report
from emosdk.scores import softmax

from . import FER_CLASSES
from . import data as D
from .common import TTA, blurred, face_views, normalise


def onnx_values(path: Path) -> int:
    """Number of values in the graph's initializers: its weights after export (batch norms folded
    into the convolutions, so a little under the torch module's parameter count)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer))


def latency(graph: Path, runs: int = 200, size: int = 48) -> dict:
    """One-face latency of a face-encoder graph on one onnxruntime thread (ms), and the machine."""
    import os
    import platform
    import time

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(1, 1, size, size)).astype(np.float32)
    for _ in range(20):
        sess.run(None, {"face": x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {"face": x})
        times.append((time.perf_counter() - t0) * 1e3)
    t = np.array(times)
    return {
        "runs": runs,
        "threads": 1,
        "p50_ms": round(float(np.percentile(t, 50)), 3),
        "p95_ms": round(float(np.percentile(t, 95)), 3),
        "min_ms": round(float(t.min()), 3),
        "onnx_bytes": graph.stat().st_size,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_avg_1min": round(os.getloadavg()[0], 2),
            "onnxruntime": ort.__version__,
        },
    }


def blurred_faces(split: str, root: Path, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The split's faces under motion blur over 15 % of the face width at 45 degrees, normalised
    as the runtime does, and their labels (indices into ``FER_CLASSES``)."""
    from .fusion_data import fer_images

    imgs, labels = fer_images(split, root, limit or 0, classes=FER_CLASSES)
    return normalise(blurred(imgs), FaceParams()), labels


def evaluate(session, x: np.ndarray, y: np.ndarray, tta: str, batch: int = 256) -> dict:
    """classification_report of the mean softmax over the views of ``tta``."""
    probs = np.zeros((len(x), len(FER_CLASSES)), np.float64)
    views = face_views(x, tta)
    for v in views:
        for s in range(0, len(v), batch):
            xb = np.ascontiguousarray(v[s : s + batch], np.float32)
            logits = session.run(["face_logits"], {"face": xb})[0]
            probs[s : s + batch] += softmax(logits)
    return classification_report(y, (probs / len(views)).argmax(-1), FER_CLASSES)


def main(argv: list[str] | None = None) -> dict:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=Path("sdk/emosdk/models/bundled/default"))
    p.add_argument("--graph", default="face_encoder.onnx", help="file in --bundle")
    p.add_argument("--tta", default="none,flip,10crop", help="comma-separated: " + ",".join(TTA))
    p.add_argument("--splits", default="PublicTest", help="comma-separated FER2013 usages")
    p.add_argument("--data-root", type=Path, default=D.DATA_ROOT)
    p.add_argument("--cache-dir", default=str(D.CACHE_DIR), help='"" = no cache')
    p.add_argument("--limit", type=int, default=0, help=">0: smoke run, faces per class")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--latency", type=int, default=0, help=">0: time N one-face runs, 1 thread")
    p.add_argument("--motion-blur", action="store_true", help="also one view under blur s3")
    p.add_argument("--out-json", type=Path)
    args = p.parse_args(argv)
    ttas = [t for t in args.tta.split(",") if t]
    for t in ttas:
        if t not in TTA:
            p.error(f"--tta: {t!r} is not one of {', '.join(TTA)}")
    graph = args.bundle / args.graph
    if not graph.is_file():
        p.error(f"no face encoder graph at {graph}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
    cache = Path(args.cache_dir) if args.cache_dir and not args.limit else None
    result = {
        "graph": str(graph),
        "graph_values": onnx_values(graph),
        "tta": {t: TTA[t] for t in ttas},
        "command": "python -m train.evaluate_face " + " ".join(argv or sys.argv[1:]),
        "splits": {},
    }
    for split in [s for s in args.splits.split(",") if s]:
        limit = args.limit or None
        x, y = D.load_fer2013(split, FaceParams(), args.data_root, limit, cache_dir=cache)
        result["splits"][split] = {t: evaluate(session, x, y, t) for t in ttas}
        if args.motion_blur:
            xb, yb = blurred_faces(split, args.data_root, limit)
            result["splits"][split]["motion_blur_s3"] = evaluate(session, xb, yb, "none")
        for t in result["splits"][split]:
            r = result["splits"][split][t]
            line = {"split": split, "tta": t, "n": r["n"], "accuracy": round(r["accuracy"], 4)}
            print(json.dumps(line | {"macro_f1": round(r["macro_f1"], 4)}), flush=True)
    if args.latency:
        result["latency"] = latency(graph, args.latency)
        print(json.dumps({"latency_ms": {k: result["latency"][k] for k in ("p50_ms", "min_ms")}}))
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
