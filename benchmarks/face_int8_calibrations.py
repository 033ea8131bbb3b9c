"""Static int8 face encoder: how the calibration choices change accuracy (issue 17's RTF work).

Quantises the default bundle's face encoder (from float32 weights) in several ways and scores
each graph on FER2013 PublicTest with one view: its own 7-class head, and the bundle's fusion
on the video alone (the six project labels; the face embedding repeated over the window's
frame slots, audio masked, as ``Recognizer.predict(face=...)`` does), plus the one-face latency
on one thread. 0.3.0's build had refused its static int8 face encoder for an 8.8-point drop on
the synthetic Test pairs; this script is the search for that drop (docs/face.md).

    OMP_NUM_THREADS=2 python benchmarks/face_int8_calibrations.py \\
        --out benchmarks/results/face_int8_calibrations.json

Needs the ``train`` extra (FER2013 loaders) and ``../shared/data``; about 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the training code (train/) of this checkout

from emosdk.evaluation import environment  # noqa: E402
from emosdk.export.quantize import float32_weights  # noqa: E402
from emosdk.features.face import FaceParams, normalize_face  # noqa: E402
from emosdk.metrics import classification_report  # noqa: E402
from emosdk.models import load_model  # noqa: E402
from train import FER_CLASSES, LABELS  # noqa: E402
from train import data as D  # noqa: E402
from train.evaluate_face import latency  # noqa: E402
from train.fusion_data import fer_images  # noqa: E402

S8, U8 = QuantType.QInt8, QuantType.QUInt8
MINMAX, PCT, ENT = CalibrationMethod.MinMax, CalibrationMethod.Percentile, CalibrationMethod.Entropy
# name -> (calibration faces, how drawn, quantize_static options)
CONFIGS = {
    "minmax_256": (256, "random", {}),
    "minmax_256_first_conv_and_head_float": (
        256, "random", {"nodes_to_exclude": ["node_conv2d", "node_linear_1"]}),
    "percentile_1024": (1024, "random", {"calibrate_method": PCT}),
    "entropy_1024": (1024, "random", {"calibrate_method": ENT}),
    "minmax_1024_uint8_activations": (1024, "random", {"activation_type": U8}),
    "percentile_1024_first_conv_and_linears_float": (1024, "random", {
        "calibrate_method": PCT,
        "nodes_to_exclude": ["node_conv2d", "node_linear", "node_linear_1"]}),
    "minmax_first_256_one_class": (256, "first", {}),
    "minmax_256_reduce_range": (256, "random", {"reduce_range": True}),
    "minmax_256_uint8_uint8": (256, "random", {"activation_type": U8, "weight_type": U8}),
}  # fmt: skip


class Reader(CalibrationDataReader):
    def __init__(self, feeds: list[dict]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self._it, None)


def session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    bundle = load_model("default")
    fp = FaceParams()
    x, y = D.load_fer2013("PublicTest", fp)  # 7 classes, one view
    keep = y < len(LABELS)  # FER_CLASSES = the six LABELS, then surprise
    assert list(FER_CLASSES[: len(LABELS)]) == list(LABELS)
    train_imgs, _ = fer_images("Training", classes=FER_CLASSES)  # manifest order: by class
    rng = np.random.default_rng(0)
    fusion = session(bundle.graph_path("fusion"), args.threads)
    tv = int(round(bundle.stream.window_s * bundle.stream.video_fps))

    def figures(graph: Path) -> dict:
        s = session(graph, args.threads)
        emb, logits = [], []
        for i in range(0, len(x), 256):
            e, lg = s.run(["face_emb", "face_logits"], {"face": x[i : i + 256]})
            emb.append(e)
            logits.append(lg)
        head = classification_report(y, np.concatenate(logits).argmax(-1), FER_CLASSES)
        v = np.repeat(np.concatenate(emb)[keep][:, None], tv, 1).astype(np.float32)
        pred = []
        for i in range(0, len(v), 256):
            b = v[i : i + 256]
            n, ta = len(b), 75
            pred.append(fusion.run(["logits"], {
                "audio": np.zeros((n, ta, 128), np.float32),
                "audio_mask": np.zeros((n, ta), np.float32),
                "video": b, "video_mask": np.ones((n, tv), np.float32)})[0])  # fmt: skip
        video = classification_report(y[keep], np.concatenate(pred).argmax(-1), LABELS)
        return {
            "head_accuracy": round(head["accuracy"], 4),
            "head_macro_f1": round(head["macro_f1"], 4),
            "fusion_video_only_accuracy": round(video["accuracy"], 4),
            "fusion_video_only_macro_f1": round(video["macro_f1"], 4),
            "one_face_p50_ms": latency(graph, 300)["p50_ms"],
        }

    command = "python benchmarks/face_int8_calibrations.py " + " ".join(argv or sys.argv[1:])
    out = {"command": command, "bundle": f"{bundle.name} {bundle.version}", "configs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        f32 = float32_weights(bundle.graph_path("face_encoder"), Path(tmp) / "f32.onnx")
        out["float32"] = figures(f32)
        print(json.dumps({"float32": out["float32"]}), flush=True)
        for name, (n, draw, opts) in CONFIGS.items():
            idx = rng.permutation(len(train_imgs))[:n] if draw == "random" else np.arange(n)
            faces = np.stack([normalize_face(im, fp) for im in train_imgs[idx]])
            feeds = [{"face": faces[i : i + 16]} for i in range(0, n, 16)]

            kw = {"quant_format": QuantFormat.QDQ, "per_channel": True, "weight_type": S8,
                  "activation_type": S8, "op_types_to_quantize": ["Conv", "MatMul", "Gemm"],
                  **opts}  # fmt: skip
            dst = Path(tmp) / f"{name}.onnx"
            quantize_static(str(f32), str(dst), Reader(feeds), **kw)
            out["configs"][name] = figures(dst)
            print(json.dumps({name: out["configs"][name]}), flush=True)
    ref = out["float32"]["fusion_video_only_macro_f1"]
    out["largest_fusion_video_only_macro_f1_drop"] = round(
        max(ref - c["fusion_video_only_macro_f1"] for c in out["configs"].values()), 4
    )
    out["environment"] = environment()
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
