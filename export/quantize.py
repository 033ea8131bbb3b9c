"""Reduced-precision variants of a bundle's graphs, checked against fp32 before they are kept.

int8 (:func:`quantize_bundle`), for CPUs: dynamic quantization (weights int8 ahead of time,
activations quantised per call) with ONNX Runtime's quantizer. Only MatMul/Gemm are quantised by
default: ORT's ConvInteger kernel is slower than its fp32 convolution on x86 CPUs, so quantising
the convolutions costs speed.

fp16 (:func:`fp16_bundle`), for NVIDIA GPUs through ONNX Runtime's CUDA provider (and the graphs a
strongly typed TensorRT >= 10.12 builds fp16 engines from): weights and activations in float16,
inputs and outputs kept float32 (``keep_io_types``) so the runtime feeds them as it feeds fp32.
Plain conversion of the exported graph: fp16 after ONNX Runtime's transformers optimizer
segfaults ORT on CPUs (docs/export.md). They are checked on the CPU, where ORT runs fp16 graphs
(slower than fp32), output by output against fp32 and, with a manifest, on accuracy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emosdk.errors import EmosdkError
from emosdk.models.bundle import GRAPH_ROLES, MANIFEST, load_bundle, sha256_file

logger = logging.getLogger("emosdk")

MAX_MACRO_F1_DROP = 0.01
"""An int8 variant is refused when it loses more than one macro-F1 point against fp32."""


class QuantizationRejectedError(EmosdkError):
    """The quantised graphs lose more accuracy than allowed (pass force=True to keep them)."""


def update_manifest(bundle_dir: Path, **changes: object) -> dict:
    """Merge ``changes`` into model.json, re-hash every listed file, write it, verify it."""
    path = Path(bundle_dir) / MANIFEST
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta.update(changes)
    meta["files"] = {f: sha256_file(Path(bundle_dir) / f) for f in meta["files"]}
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    load_bundle(bundle_dir)
    return meta


def remove_variant(bundle_dir: str | Path, variant: str, role: str) -> Path | None:
    """Take ``role``'s graph out of the bundle's ``variant`` (e.g. an int8 graph that costs more
    bytes than it saves time) and delete its file unless a default graph or another variant
    entry still uses it; model.json re-hashed and verified.

    Returns:
        The deleted file, or None when the file stays (still referenced).

    Raises:
        KeyError: the bundle has no such variant entry.
    """
    bundle_dir = Path(bundle_dir)
    meta = json.loads((bundle_dir / MANIFEST).read_text(encoding="utf-8"))
    variants = {k: dict(v) for k, v in meta.get("variants", {}).items()}
    if role not in variants.get(variant, {}):
        have = {k: sorted(v) for k, v in variants.items()}
        raise KeyError(f"{bundle_dir}: no variant {variant!r} for {role!r} (variants: {have})")
    name = variants[variant].pop(role)
    if not variants[variant]:
        variants.pop(variant)
    used = {g["file"] for g in meta.get("graphs", {}).values()}
    used |= {g["file"] for g in meta.get("perception", {}).values()}
    used |= {f for v in variants.values() for f in v.values()}
    files = dict(meta["files"])
    gone = None
    if name not in used:
        files.pop(name, None)
        gone = bundle_dir / name
        gone.unlink(missing_ok=True)
    update_manifest(bundle_dir, files=files, variants=variants)
    return gone


AUDIO_EXT = {".wav", ".flac", ".ogg", ".opus", ".mp3"}
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp"}


def calibration_feeds(
    bundle_dir: Path, files: Sequence[str | Path], batch: int = 16, seed: int = 0
) -> dict[str, list[dict]]:
    """Inputs of each graph for static quantization, made from real files.

    Audio files become one model window each (log-mel through the runtime's front-end), face
    images (crops) go through the runtime's normaliser; the fusion graph gets the fp32 encoders'
    outputs of both, paired in order, with a quarter of the examples missing the audio and a
    quarter missing the video, as the model meets them.
    """
    import onnxruntime as ort

    from emosdk.capture.media import read_media
    from emosdk.features.face import normalize_face
    from emosdk.features.whisper import compute_features

    bundle = load_bundle(bundle_dir)
    sr, win = bundle.audio.sample_rate, bundle.stream.window_s
    n = int(win * sr)
    mels, faces = [], []
    for f in map(Path, files):
        if f.suffix.lower() in AUDIO_EXT:
            pcm = read_media(f)[0][:n]
            padded = np.zeros(n, np.float32)
            lead = (n - len(pcm)) // 2
            padded[lead : lead + len(pcm)] = pcm  # centred, as the runtime places short clips
            mels.append(compute_features(padded, bundle.audio)[None])  # the bundle's front end
        elif f.suffix.lower() in IMAGE_EXT:
            import cv2

            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is not None:
                faces.append(normalize_face(img, bundle.face))
    if not mels or not faces:
        raise ValueError("calibration needs both audio files and face images")
    face_batches = [np.stack(faces[i : i + batch]) for i in range(0, len(faces), batch)]
    sess = {
        r: ort.InferenceSession(str(bundle.graph_path(r)), providers=["CPUExecutionProvider"])
        for r in ("audio_encoder", "face_encoder")
    }
    a_embs = [sess["audio_encoder"].run(None, {"logmel": m})[0] for m in mels]
    f_embs = np.concatenate([sess["face_encoder"].run(None, {"face": b})[0] for b in face_batches])
    tv = int(round(win * bundle.stream.video_fps))
    rng = np.random.default_rng(seed)
    fusion = []
    for i, a in enumerate(a_embs):
        v = f_embs[rng.integers(0, len(f_embs), tv)][None]
        am, vm = np.ones(a.shape[:2], np.float32), np.ones((1, tv), np.float32)
        if i % 4 == 1:
            a, am = np.zeros_like(a), np.zeros_like(am)
        elif i % 4 == 2:
            v, vm = np.zeros_like(v), np.zeros_like(vm)
        fusion.append(
            {
                "audio": np.ascontiguousarray(a),
                "audio_mask": am,
                "video": np.ascontiguousarray(v, dtype=np.float32),
                "video_mask": vm,
            }
        )
    return {
        "audio_encoder": [{"logmel": m} for m in mels],
        "face_encoder": [{"face": b} for b in face_batches],
        "fusion": fusion,
    }


def quantize_static_qdq(src: Path, dst: Path, feeds: list[dict], op_types: Sequence[str]) -> None:
    """QDQ int8 (per-channel 7-bit weights, int8 activations): fast on CPUs, and the explicit
    quantization TensorRT 10 builds int8 engines from."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self._it, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QInt8,
        op_types_to_quantize=list(op_types),
        # 7-bit weights: on x86 CPUs without VNNI, ONNX Runtime multiplies int8 with
        # vpmaddubsw, whose 16-bit sums can saturate at full 8-bit range (its documented cause
        # of large int8 accuracy drops); with VNNI, and on ARM, nothing changes (measured on the
        # default face encoder: FER2013 PublicTest 0.643 vs 0.646 without, same speed;
        # benchmarks/face_int8_calibrations.py)
        reduce_range=True,
    )


def quantize_bundle(
    bundle_dir: str | Path,
    *,
    op_types: Sequence[str] = ("MatMul", "Gemm"),
    roles: Sequence[str] = GRAPH_ROLES,
    manifest: str | Path | None = None,
    max_drop: float = MAX_MACRO_F1_DROP,
    force: bool = False,
    calibration: Sequence[str | Path] | None = None,
    static_roles: Sequence[str] = ("face_encoder",),
    static_op_types: Sequence[str] = ("Conv", "MatMul", "Gemm"),
) -> dict:
    """Add int8 variants of ``roles`` to a bundle (``<role>.int8.onnx``).

    Dynamic quantization (weights only, activations per call) by default. With ``calibration``
    (real audio files and face images, e.g. CREMA-D Train clips and FER2013 Training faces), the
    ``static_roles`` get static QDQ quantization calibrated on them instead, convolutions
    included: the face encoder's convolutions are where the CPU time goes (measured on 2 cores:
    static face encoder 1.95x faster than fp32; a static audio encoder was 0.71x, slower, so it
    stays dynamic by default; benchmarks/README.md).

    With ``manifest`` (held-out files, see ``emosdk-bench accuracy``), fp32 and int8 are both
    evaluated and the variant is refused when macro-F1 drops by more than ``max_drop``, unless
    ``force``. The figures go into model.json under ``metrics.int8_check``.

    Returns:
        The int8 graphs this call made (role -> file). model.json's ``variants.int8`` keeps the
        entries of the roles not quantised now (refused: only this call's graphs go).

    Raises:
        QuantizationRejectedError: the accuracy check failed and ``force`` is False (the
            variant files are removed again).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    meta = dict(bundle.meta)
    files = dict(meta["files"])
    variant = {}
    feeds = calibration_feeds(bundle_dir, calibration) if calibration else None
    opset18 = meta.get("variants", {}).get("opset18", {})
    before = dict(meta.get("variants", {}).get("int8", {}))
    for role in roles:
        # from float32 weights: the main graph, or its opset-18 copy where the main graph is
        # already integer (the default audio encoder), with fp16-stored weights made float32
        # again, so that the quantizer sees initializers, not Cast outputs
        src = float32_weights(
            _float_source(bundle_dir, bundle.graph_path(role), opset18, role),
            bundle_dir / f"{role}.int8-source.onnx",
        )
        dst = bundle_dir / f"{role}.int8.onnx"
        try:
            if feeds is not None and role in static_roles:
                quantize_static_qdq(src, dst, feeds[role], static_op_types)
            else:
                quantize_dynamic(
                    str(src),
                    str(dst),
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=list(op_types),
                )
        finally:
            src.unlink()
        variant[role] = dst.name
        files[dst.name] = ""
        logger.info(
            "quantised %s: %.2f MB -> %.2f MB",
            role,
            bundle.graph_path(role).stat().st_size / 1e6,
            dst.stat().st_size / 1e6,
        )
    # the roles not quantised now keep the int8 graphs they had
    variants = {**meta.get("variants", {}), "int8": {**before, **variant}}
    update_manifest(bundle_dir, files=files, variants=variants)
    if manifest is None:
        return variant
    from emosdk import Recognizer
    from emosdk.evaluation import accuracy

    scores = {}
    for precision in ("fp32", "int8"):
        with Recognizer(model=bundle_dir, precision=precision, smoothing="none") as rec:
            scores[precision] = accuracy(rec, Path(manifest), "auto", None, robustness=False)
    drop = scores["fp32"]["macro_f1"] - scores["int8"]["macro_f1"]
    check = {
        "manifest": str(manifest),
        "mode": {
            r: ("static QDQ" if feeds is not None and r in static_roles else "dynamic")
            for r in roles
        },
        "fp32": {k: scores["fp32"][k] for k in ("n", "accuracy", "macro_f1")},
        "int8": {k: scores["int8"][k] for k in ("n", "accuracy", "macro_f1")},
        "macro_f1_drop": drop,
        "max_drop": max_drop,
        "forced": bool(force and drop > max_drop),
    }
    if drop > max_drop and not force:
        for f in variant.values():
            (bundle_dir / f).unlink()
            files.pop(f)
        kept = {r: f for r, f in before.items() if r not in variant}
        if kept:
            variants["int8"] = kept
        else:
            variants.pop("int8")
        update_manifest(bundle_dir, files=files, variants=variants)
        raise QuantizationRejectedError(
            f"int8 loses {100 * drop:.2f} macro-F1 points on {manifest} (allowed "
            f"{100 * max_drop:.2f}); variant removed. Pass force=True to keep it anyway."
        )
    metrics = {**meta.get("metrics", {}), "int8_check": check}
    update_manifest(bundle_dir, metrics=metrics)
    return variant


def fp16_weights(src: Path, dst: Path, min_elements: int = 1024) -> Path:
    """Store the large float32 initializers of ``src`` as float16, each followed by a Cast to
    float32, in ``dst`` (may be ``src``): half the file, and ONNX Runtime folds the casts when it
    loads the graph, so the arithmetic stays float32 (a storage variant, "fp16w", unlike
    :func:`fp16_bundle`'s fp16 arithmetic)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    casts = []
    for init in g.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < min_elements:
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), name + "_fp16"))
        casts.append(helper.make_node("Cast", [name + "_fp16"], [name], to=onnx.TensorProto.FLOAT))
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def float32_weights(src: Path, dst: Path) -> Path:
    """The inverse of :func:`fp16_weights`: every float16-stored initializer that a Cast turns
    into float32 is stored as float32 again (the Cast removed), in ``dst`` (may be ``src``). The
    values are the float16 ones, so the graph computes exactly what the stored form computes;
    for a float32 source graph to re-derive variants from (the bundle ships the stored form)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    keep = []
    for node in g.node:
        init = inits.get(node.input[0]) if node.op_type == "Cast" and node.input else None
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if (
            init is not None
            and init.data_type == onnx.TensorProto.FLOAT16
            and to == onnx.TensorProto.FLOAT
        ):
            arr = numpy_helper.to_array(init).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(arr, node.output[0]))
        else:
            keep.append(node)
    del g.node[:]
    g.node.extend(keep)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


FP16_CHECK_WINDOWS_S = (1.0, 3.0, 6.0)
"""Window lengths the fp16 graphs are compared with fp32 at (with a batch of 2)."""


def _fp16_graph(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from emosdk.backends.onnxruntime import PRECISION_KEY

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    # the runtime reads this back (session metadata) to refuse running fp32 graphs as "fp16"
    onnx.helper.set_model_props(model, {PRECISION_KEY: "fp16"})
    onnx.save(model, str(dst))


INTEGER_OPS = frozenset(
    {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QuantizeLinear", "QLinearMatMul"}
)
"""Ops that mark an integer-quantised graph (no float graph to convert to fp16)."""


def _float_source(bundle_dir: Path, main: Path, opset18: dict[str, str], role: str) -> Path:
    """The float graph of ``role`` to derive fp16 or int8 variants from: the main graph, or,
    when that one is integer-quantised (the default bundle's CPU audio encoder is dynamic int8),
    the bundle's opset-18 copy (float weights)."""
    import onnx

    ops = {n.op_type for n in onnx.load(str(main), load_external_data=False).graph.node}
    if not ops & INTEGER_OPS:
        return main
    if role in opset18:
        return bundle_dir / opset18[role]
    raise QuantizationRejectedError(
        f"{main.name} ({role}) is integer-quantised and the bundle has no float copy of it "
        "(variant opset18): there is no float graph to make an fp16 or int8 variant from"
    )


def _fp16_drift(
    bundle_dir: Path, roles: Sequence[str], variant: dict[str, str], sources: dict[str, Path]
) -> dict:
    """Largest |fp16 - fp32| per output over random inputs (modalities missing included); the
    fp16 graph against the float graph it was made from (``sources``), both on ONNX Runtime's
    CPU provider. Refuses non-finite outputs."""
    import onnxruntime as ort

    from emosdk.export.validate import random_inputs

    bundle = load_bundle(bundle_dir)
    fusion = bundle.graphs["fusion"]
    d_audio = int(fusion.input("audio").shape[-1])
    d_video = int(fusion.input("video").shape[-1])
    out: dict[str, dict[str, float]] = {}
    for role in roles:
        spec = bundle.graphs[role]
        s32, s16 = (
            ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
            for p in (sources[role], bundle_dir / variant[role])
        )
        worst = {t.name: 0.0 for t in spec.outputs}
        cases = [(w, m) for w in FP16_CHECK_WINDOWS_S for m in ((True, True),)]
        if role == "fusion":
            cases += [(3.0, (True, False)), (3.0, (False, True))]
        for w, modalities in cases:
            x = random_inputs(role, 2, w, bundle, d_audio, d_video, modalities=modalities)
            feeds = dict(zip([t.name for t in spec.inputs], x))
            names = [t.name for t in spec.outputs]
            for n, a, b in zip(names, s32.run(names, feeds), s16.run(names, feeds)):
                if not np.isfinite(b).all():
                    raise QuantizationRejectedError(
                        f"{variant[role]}: output {n} is not finite at a {w} s window "
                        f"(modalities {modalities}); fp32 is"
                    )
                worst[n] = max(worst[n], float(np.abs(a - b).max()))
        out[role] = worst
    return out


def fp16_bundle(
    bundle_dir: str | Path,
    *,
    roles: Sequence[str] = GRAPH_ROLES,
    manifest: str | Path | None = None,
    max_drop: float = MAX_MACRO_F1_DROP,
    force: bool = False,
) -> dict:
    """Add fp16 variants of ``roles`` to a bundle (``<role>.fp16.onnx``; ``variants.fp16``).

    When the bundle has opset-18 copies for TensorRT (``variants.opset18``), they get fp16 copies
    too (``<role>.opset18.fp16.onnx``; ``variants.opset18_fp16``): the graphs a strongly typed
    TensorRT (>= 10.12) builds fp16 engines from. A role whose main graph is integer-quantised
    (the default bundle's CPU audio encoder) is converted from its opset-18 copy instead.

    Every variant is compared with its fp32 graph on ONNX Runtime's CPU provider (random inputs,
    windows of :data:`FP16_CHECK_WINDOWS_S`, a missing modality included); the largest absolute
    difference per output goes into model.json under ``metrics.fp16_check.max_abs_diff``. With
    ``manifest`` (held-out files, see ``emosdk-bench accuracy``), fp32 and fp16 are both evaluated
    on the CPU and the variant is refused when macro-F1 drops by more than ``max_drop``, unless
    ``force``; the figures go into ``metrics.fp16_check`` beside the differences.

    Returns:
        The fp16 variant map written into model.json (role -> file).

    Raises:
        QuantizationRejectedError: an fp16 output is not finite, or the accuracy check failed
            and ``force`` is False (the variant files are removed again).
    """
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    meta = dict(bundle.meta)
    files = dict(meta["files"])
    variants = dict(meta.get("variants", {}))
    variant: dict[str, str] = {}
    opset18 = variants.get("opset18", {})
    variant18: dict[str, str] = {}
    sources: dict[str, Path] = {}
    for role in roles:
        sources[role] = src = _float_source(bundle_dir, bundle.graph_path(role), opset18, role)
        dst = bundle_dir / f"{role}.fp16.onnx"
        _fp16_graph(src, dst)
        variant[role] = dst.name
        files[dst.name] = ""
        logger.info(
            "fp16 %s: %.2f MB -> %.2f MB", role, src.stat().st_size / 1e6, dst.stat().st_size / 1e6
        )
        if role in opset18 and src == bundle_dir / opset18[role]:
            variant18[role] = dst.name  # already made from the opset-18 copy: the same file
        elif role in opset18:
            dst18 = bundle_dir / f"{role}.opset18.fp16.onnx"
            _fp16_graph(bundle_dir / opset18[role], dst18)
            variant18[role] = dst18.name
            files[dst18.name] = ""
    variants["fp16"] = variant
    if variant18:
        variants["opset18_fp16"] = variant18
    written = sorted({*variant.values(), *variant18.values()})

    def remove() -> None:
        for f in written:
            (bundle_dir / f).unlink(missing_ok=True)
            files.pop(f, None)
        variants.pop("fp16", None)
        variants.pop("opset18_fp16", None)
        update_manifest(bundle_dir, files=files, variants=variants)

    update_manifest(bundle_dir, files=files, variants=variants)
    try:
        drift = _fp16_drift(bundle_dir, roles, variant, sources)
    except QuantizationRejectedError:
        remove()
        raise
    check: dict = {
        "conversion": "onnxruntime.transformers.float16.convert_float_to_float16, keep_io_types",
        "checked_on": "onnxruntime CPUExecutionProvider",
        "windows_s": list(FP16_CHECK_WINDOWS_S),
        "max_abs_diff": drift,
    }
    if manifest is not None:
        from emosdk import Recognizer
        from emosdk.evaluation import accuracy

        scores = {}
        for precision in ("fp32", "fp16"):
            # fp16 on the CPU only because it is asked for by name: the check, not the use
            cpu = ("CPUExecutionProvider",)
            with Recognizer(
                model=bundle_dir, precision=precision, providers=cpu, smoothing="none"
            ) as rec:
                scores[precision] = accuracy(rec, Path(manifest), "auto", None, robustness=False)
        drop = scores["fp32"]["macro_f1"] - scores["fp16"]["macro_f1"]
        check |= {
            "manifest": str(manifest),
            "fp32": {k: scores["fp32"][k] for k in ("n", "accuracy", "macro_f1")},
            "fp16": {k: scores["fp16"][k] for k in ("n", "accuracy", "macro_f1")},
            "macro_f1_drop": drop,
            "max_drop": max_drop,
            "forced": bool(force and drop > max_drop),
        }
        if drop > max_drop and not force:
            remove()
            raise QuantizationRejectedError(
                f"fp16 loses {100 * drop:.2f} macro-F1 points on {manifest} (allowed "
                f"{100 * max_drop:.2f}); variant removed. Pass force=True to keep it anyway."
            )
    metrics = {**meta.get("metrics", {}), "fp16_check": check}
    update_manifest(bundle_dir, metrics=metrics)
    return variant
