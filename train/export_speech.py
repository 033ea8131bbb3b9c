"""Export the fine-tuned Whisper audio branch to ONNX, check it, and make its smaller variants.

From a finished :mod:`train.train_speech` run folder (``model.pt``) this writes, with the
functions of ``emosdk.export`` (dynamo exporter, validation against torch on several shapes):

* ``audio_encoder.opset23.onnx``: fused ``Attention`` ops (ONNX Runtime on CPUs);
* ``audio_encoder.opset18.onnx``: MatMul/Softmax attention (TensorRT's parser);
* ``audio_encoder.fp16w.onnx``: the opset-18 graph with its weights *stored* in float16 and cast
  to float32 once when ONNX Runtime loads it (half the file, fp32 arithmetic; Whisper's own
  weights are float16 in the CTranslate2 file, so little is lost); opset 18 runs as fast as 23
  on ONNX Runtime's CPU provider here and is TensorRT's input, so one such file serves both;
* ``audio_encoder.int8.onnx``: dynamic int8 of the opset-23 graph (MatMul weights int8, the
  convolutions included as MatMuls, activations quantised per call), its remaining float tables
  (the position table) stored in float16.

The graphs compute GELU with its tanh approximation (``--gelu tanh``, the default; ``none``
keeps the trained erf form): ONNX Runtime's erf ``Gelu`` took 0.7 ms of the int8 graph's 10.4 on
one core. On the shipped branch ``audio_emb`` moves by at most 7e-3 (values of order 3) and the
class probabilities by at most 7e-4 on the sample clips.

Every variant is scored on the run's Test clips (the same ``Recognizer.predict`` windows, the
ONNX graph's ``audio_emb`` through the run's classifier head): a variant losing more than
:data:`emosdk.export.quantize.MAX_MACRO_F1_DROP` macro-F1 against the trained torch model (the
run's own ``result.json``) is refused (:class:`emosdk.export.quantize.QuantizationRejectedError`,
file removed), so the approximation's cost is counted with the quantisation's.

    python -m train.export_speech runs/speech/shipped --out runs/speech/export
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from emosdk.export.onnx import (
    OPSET_ONNXRUNTIME,
    OPSET_TENSORRT,
    compare_onnx,
    export_onnx,
    fold_attention_heads,
)
from emosdk.export.quantize import MAX_MACRO_F1_DROP, QuantizationRejectedError, fp16_weights
from emosdk.features.whisper import WhisperMelParams

from .speech_data import features, load_pcm, predict_window
from .speech_run import Config, load_branch, run_data, scores
from .whisper import N_HEADS, WhisperBranchGraph

logger = logging.getLogger("emosdk.train")

INPUT, OUTPUT = "logmel", "audio_emb"
TOLERANCE = 1e-3  # audio_emb is LayerNorm'd (values of order 1); measured differences ~1e-5
FP16W_TOLERANCE = 2e-2  # weights rounded to float16 (relative 5e-4) through two blocks


def example_inputs(seed: int = 0) -> list[tuple[torch.Tensor]]:
    """Shapes to validate on: the 3 s window, a batch of odd length, a 10 s clip."""
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(2, 300, 80, generator=g) * 0.3,),
        (torch.randn(1, 300, 80, generator=g) * 0.3,),
        (torch.randn(3, 453, 80, generator=g) * 0.3,),
        (torch.randn(1, 1000, 80, generator=g) * 0.3,),
    ]


def export_graphs(
    branch: torch.nn.Module,
    out: Path,
    opsets: tuple[int, ...] = (OPSET_ONNXRUNTIME, OPSET_TENSORRT),
    gelu: str = "tanh",
) -> dict[str, Path]:
    """fp32 graphs at ``opsets`` (23 and 18), validated against torch (emosdk.export.onnx);
    ``gelu`` as in :class:`train.whisper.WhisperBranchGraph`."""
    graph = WhisperBranchGraph(branch, gelu=gelu).eval()
    ex = example_inputs()
    paths = {}
    for opset in opsets:
        paths[f"opset{opset}"] = path = export_onnx(
            graph,
            ex[0],
            out / f"audio_encoder.opset{opset}.onnx",
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes_names={INPUT: {0: "B", 1: "frames"}},
            opset=opset,
            check_inputs=ex[1:],
            tolerance=TOLERANCE,
            output_dim_names={OUTPUT: {0: "B", 1: "steps"}},
        )
        if opset >= 23:  # 3-D Attention (emosdk.export.onnx.fold_attention_heads), re-checked
            import onnx

            model = onnx.load(str(path))
            if fold_attention_heads(model, N_HEADS):
                onnx.save(model, str(path))
                compare_onnx(graph, path, ex, [INPUT], TOLERANCE)
    return paths


def int8_dynamic(src: Path, dst: Path) -> Path:
    """Dynamic int8 of MatMul/Gemm (opset 23 needs the op list: ``Attention`` would otherwise be
    taken for the contrib op; shared/notes/dependencies.md), weights per output channel with a
    7-bit range.

    Measured on the partition-1 block-2 fine-tune (Test macro-F1, fp32 0.640): per-tensor int8
    0.627 (refused, -1.3 points); per-channel 0.574 (the u8 x s8 products saturate on CPUs
    without VNNI, which is what ``reduce_range`` is for); per-channel with ``reduce_range``
    0.642, at 11.0 ms against fp32's 18.7 ms of one core's time on the loaded machine.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    del model.graph.value_info[:]  # the exporter's value_info trips the quantizer's inference
    tmp = dst.with_suffix(".pre.onnx")
    onnx.save(model, str(tmp))
    quantize_dynamic(
        str(tmp),
        str(dst),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=True,
        reduce_range=True,
    )
    tmp.unlink()
    return dst


def session(path: Path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def score_graph(path: Path, branch, utts, pcm) -> dict:
    """Test figures with ``audio_emb`` from the ONNX graph and the run's torch classifier head."""
    sess = session(path)
    logits = []
    for u in utts:
        mel = features(predict_window(pcm[u.name]))[None]
        emb = sess.run([OUTPUT], {INPUT: mel})[0]
        with torch.no_grad():
            logits.append(branch.classify(torch.from_numpy(emb)).numpy()[0])
    return scores(utts, np.stack(logits))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="finished train_speech run folder (model.pt)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--eval", default="test", help="evaluation set of the run to score on")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--force", action="store_true", help="keep a variant beyond the allowed drop")
    p.add_argument(
        "--gelu",
        choices=("none", "tanh"),
        default="tanh",
        help="GELU in the graphs: tanh approximation (default: ONNX Runtime's erf Gelu took 0.7 "
        "of the int8 graph's 10.4 ms on one core, the approximation 0.4) or none (erf, as trained)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    branch = load_branch(args.run)
    paths = export_graphs(branch, args.out, gelu=args.gelu)
    paths["fp16w"] = fp16_weights(paths["opset18"], args.out / "audio_encoder.fp16w.onnx")
    fp16w_check = compare_onnx(
        WhisperBranchGraph(branch, gelu=args.gelu).eval(),
        paths["fp16w"],
        example_inputs(),
        [INPUT],
        FP16W_TOLERANCE,
    )
    paths["int8"] = int8_dynamic(paths["opset23"], args.out / "audio_encoder.int8.onnx")
    fp16_weights(paths["int8"], paths["int8"])
    cfg_d = json.loads((args.run / "config.json").read_text())
    cfg = Config(
        **{k: v for k, v in cfg_d.items() if k not in ("out", "cache_dir", "exclude")},
        exclude=tuple(cfg_d.get("exclude", ())),
    )
    _, evals = run_data(cfg)
    utts = evals[args.eval]
    pcm = load_pcm(utts, Path(cfg_d["cache_dir"]))
    report: dict = {
        "run": str(args.run),
        "eval": args.eval,
        "frontend": WhisperMelParams().to_dict(),
        "max_drop": MAX_MACRO_F1_DROP,
        "gelu": args.gelu,
        "fp16w_vs_torch": fp16w_check.to_dict(),
        "variants": {},
    }
    # the trained model itself (erf GELU, torch) on the same windows: the reference every
    # variant's drop is taken against, so the tanh approximation's cost is counted too
    run_result = json.loads((args.run / "result.json").read_text())
    ref = run_result.get(args.eval)
    if ref is None:
        raise SystemExit(f"{args.run}/result.json has no {args.eval!r} scores")
    report["torch"] = {"macro_f1": ref["macro_f1"], "micro_f1": ref["micro_f1"]}
    for name in ("opset23", "opset18", "fp16w", "int8"):
        s = score_graph(paths[name], branch, utts, pcm)
        drop = ref["macro_f1"] - s["macro_f1"]
        report["variants"][name] = {
            "file": paths[name].name,
            "mb": round(paths[name].stat().st_size / 1e6, 2),
            "macro_f1": s["macro_f1"],
            "micro_f1": s["micro_f1"],
            "macro_f1_drop": drop,
        }
        logger.info(
            "%s: %.2f MB, macro-F1 %.4f (drop %.4f)",
            name,
            *[paths[name].stat().st_size / 1e6, s["macro_f1"], drop],
        )
        if drop > MAX_MACRO_F1_DROP and not args.force:
            paths[name].unlink()
            report["variants"][name]["refused"] = True
            (args.out / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
            raise QuantizationRejectedError(
                f"{name} loses {100 * drop:.2f} macro-F1 points on {args.eval} (allowed "
                f"{100 * MAX_MACRO_F1_DROP:.2f}); {paths[name].name} removed"
            )
    report["command"] = "python -m train.export_speech " + " ".join(argv or sys.argv[1:])
    (args.out / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
