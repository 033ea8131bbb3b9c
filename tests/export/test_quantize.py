"""int8 variants: written into the bundle with hashes, run by the runtime, refused when they
lose accuracy."""

import json
import shutil

import numpy as np
import pytest

from emosdk import Recognizer
from emosdk.evaluation import default_clips_manifest
from emosdk.export.quantize import (
    QuantizationRejectedError,
    fp16_weights,
    quantize_bundle,
    update_manifest,
)
from emosdk.models.bundle import load_bundle


@pytest.fixture
def bundle(fixture_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(fixture_bundle, dst)
    return dst


def test_int8_variant_is_recorded_verified_and_close_to_fp32(bundle, decoded_clips):
    variant = quantize_bundle(bundle)
    assert variant == {r: f"{r}.int8.onnx" for r in ("audio_encoder", "face_encoder", "fusion")}
    meta = load_bundle(bundle).meta  # hashes of the new files verified here
    assert set(variant.values()) <= set(meta["files"])
    _, audio, frames = decoded_clips[0]
    faces = [f for _, f in frames[::6]]
    with Recognizer(model=bundle) as fp32, Recognizer(model=bundle, precision="int8") as int8:
        assert all(g.path.name.endswith(".int8.onnx") for g in int8.graphs.values())
        a = np.array(list(fp32.predict(audio=audio, frame=faces).raw_scores.values()))
        b = np.array(list(int8.predict(audio=audio, frame=faces).raw_scores.values()))
    assert np.abs(a - b).max() < 0.05


def test_int8_with_an_accuracy_check_records_the_figures(bundle):
    quantize_bundle(bundle, manifest=default_clips_manifest(), max_drop=1.0)
    check = json.loads((bundle / "model.json").read_text())["metrics"]["int8_check"]
    assert check["fp32"]["n"] == check["int8"]["n"] == 12
    assert check["macro_f1_drop"] == pytest.approx(
        check["fp32"]["macro_f1"] - check["int8"]["macro_f1"]
    )


def test_a_variant_that_loses_accuracy_is_refused_and_removed(bundle):
    with pytest.raises(QuantizationRejectedError, match="macro-F1"):
        quantize_bundle(bundle, manifest=default_clips_manifest(), max_drop=-1.0)
    meta = load_bundle(bundle).meta
    assert "int8" not in meta.get("variants", {})
    assert not list(bundle.glob("*.int8.onnx"))
    quantize_bundle(bundle, manifest=default_clips_manifest(), max_drop=-1.0, force=True)
    assert json.loads((bundle / "model.json").read_text())["metrics"]["int8_check"]["forced"]


def test_static_int8_face_encoder_calibrated_on_real_files(bundle, shared_data, av_clips):
    import csv

    import onnx

    rows = list(csv.DictReader(open(shared_data / "fer2013" / "manifest.csv")))
    faces = [shared_data / "fer2013" / r["file"] for r in rows if r["usage"] == "Training"][:32]
    speech = sorted((av_clips[0].parent).glob("1002_*.mp3"))
    quantize_bundle(
        bundle, calibration=[*speech, *faces], manifest=default_clips_manifest(), max_drop=1.0
    )
    check = json.loads((bundle / "model.json").read_text())["metrics"]["int8_check"]
    assert check["mode"] == {
        "audio_encoder": "dynamic",
        "face_encoder": "static QDQ",
        "fusion": "dynamic",
    }
    graph = onnx.load(str(bundle / "face_encoder.int8.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # explicit Q/DQ, as TensorRT wants
    with Recognizer(model=bundle, precision="int8") as rec:
        r = rec.predict(face=[np.zeros((48, 48), np.uint8) + 128])
        assert r.label is not None


def test_quantizing_one_role_keeps_the_other_int8_graphs(bundle, shared_data, av_clips):
    import csv

    import onnx

    quantize_bundle(bundle, roles=("audio_encoder", "fusion"))
    # the face encoder stored as fp16 weights behind Casts, as the default bundle ships it: the
    # quantizer must see its weights as initializers (per-channel int8), not as Cast outputs
    face = bundle / "face_encoder.onnx"
    fp16_weights(face, face)
    meta = json.loads((bundle / "model.json").read_text())
    meta["files"]["face_encoder.onnx"] = ""
    update_manifest(bundle, files=meta["files"])
    rows = list(csv.DictReader(open(shared_data / "fer2013" / "manifest.csv")))
    faces = [shared_data / "fer2013" / r["file"] for r in rows if r["usage"] == "Training"][::500]
    speech = sorted((av_clips[0].parent).glob("1002_*.mp3"))
    with pytest.raises(QuantizationRejectedError):
        quantize_bundle(
            bundle, roles=("face_encoder",), calibration=[*speech, *faces],
            manifest=default_clips_manifest(), max_drop=-1.0,
        )  # fmt: skip
    int8 = load_bundle(bundle).meta["variants"]["int8"]
    assert int8 == {"audio_encoder": "audio_encoder.int8.onnx", "fusion": "fusion.int8.onnx"}
    assert not (bundle / "face_encoder.int8.onnx").exists()
    assert quantize_bundle(bundle, roles=("face_encoder",), calibration=[*speech, *faces]) == {
        "face_encoder": "face_encoder.int8.onnx"
    }
    int8 = load_bundle(bundle).meta["variants"]["int8"]
    assert set(int8) == {"audio_encoder", "fusion", "face_encoder"}
    assert not list(bundle.glob("*int8-source*"))
    graph = onnx.load(str(bundle / "face_encoder.int8.onnx")).graph
    conv_w = {n.input[1] for n in graph.node if n.op_type == "Conv"}
    dq = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    inits = {i.name for i in graph.initializer}
    # every convolution's weight is a dequantised int8 initializer with one scale per channel
    for w in conv_w:
        assert dq[w].input[0] in inits
        scale = next(i for i in graph.initializer if i.name == dq[w].input[1])
        assert len(scale.dims) == 1 and scale.dims[0] > 1
    assert "Cast" not in {n.op_type for n in graph.node}


def test_calibration_needs_both_modalities(bundle, av_clips):
    with pytest.raises(ValueError, match="both audio files and face images"):
        quantize_bundle(bundle, calibration=sorted(av_clips[0].parent.glob("1002_*.mp3")))


# ----- fp16 -------------------------------------------------------------------------------------


def _gpu_providers() -> set[str]:
    import onnxruntime as ort

    return {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(
        ort.get_available_providers()
    )


def test_fp16_variant_is_recorded_checked_and_runs_on_the_cpu_when_asked(bundle, decoded_clips):
    import onnx

    from emosdk.errors import BackendUnavailableError
    from emosdk.export.quantize import fp16_bundle

    variant = fp16_bundle(bundle)
    assert variant == {r: f"{r}.fp16.onnx" for r in ("audio_encoder", "face_encoder", "fusion")}
    meta = load_bundle(bundle).meta  # hashes of the new files verified here
    assert set(variant.values()) <= set(meta["files"]) and meta["variants"]["fp16"] == variant
    check = meta["metrics"]["fp16_check"]
    assert set(check["max_abs_diff"]) == set(variant)
    for role, worst in check["max_abs_diff"].items():
        assert 0 < max(worst.values()) < 0.05, (role, worst)  # fp16 rounding, and only that
    assert "manifest" not in check  # no accuracy figures without a manifest
    for f in variant.values():  # weights in float16, inputs and outputs float32
        g = onnx.load(str(bundle / f)).graph
        assert onnx.TensorProto.FLOAT16 in {t.data_type for t in g.initializer}
        assert {i.type.tensor_type.elem_type for i in g.input} == {onnx.TensorProto.FLOAT}
    _, audio, frames = decoded_clips[0]
    faces = [f for _, f in frames[::6]]
    if not _gpu_providers():  # fp16 is for GPUs: said plainly here
        with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
            Recognizer(model=bundle, precision="fp16")
    cpu = ("CPUExecutionProvider",)
    with (
        Recognizer(model=bundle, providers=cpu) as fp32,
        Recognizer(model=bundle, precision="fp16", providers=cpu) as fp16,
    ):
        assert all(g.path.name.endswith(".fp16.onnx") for g in fp16.graphs.values())
        a = np.array(list(fp32.predict(audio=audio, frame=faces).raw_scores.values()))
        b = np.array(list(fp16.predict(audio=audio, frame=faces).raw_scores.values()))
    assert 0 < np.abs(a - b).max() < 0.02  # the fp16 graphs ran (not bit-equal), close to fp32


def test_fp16_with_an_accuracy_check_records_the_figures(bundle):
    from emosdk.export.quantize import fp16_bundle

    fp16_bundle(bundle, manifest=default_clips_manifest(), max_drop=1.0)
    check = json.loads((bundle / "model.json").read_text())["metrics"]["fp16_check"]
    assert check["fp32"]["n"] == check["fp16"]["n"] == 12
    assert check["macro_f1_drop"] == pytest.approx(
        check["fp32"]["macro_f1"] - check["fp16"]["macro_f1"]
    )
    assert not check["forced"] and check["checked_on"] == "onnxruntime CPUExecutionProvider"


def test_an_fp16_variant_that_loses_accuracy_is_refused_and_removed(bundle):
    from emosdk.export.quantize import fp16_bundle

    with pytest.raises(QuantizationRejectedError, match="fp16 loses"):
        fp16_bundle(bundle, manifest=default_clips_manifest(), max_drop=-1.0)
    meta = load_bundle(bundle).meta
    assert "fp16" not in meta.get("variants", {}) and "fp16_check" not in meta.get("metrics", {})
    assert not list(bundle.glob("*.fp16.onnx"))


def test_fp16_copies_of_the_tensorrt_graphs(bundle):
    """A bundle with opset-18 copies for TensorRT gets fp16 copies of them too: what a strongly
    typed TensorRT (>= 10.12) builds its fp16 engines from."""
    from emosdk.backends.engines import engine_source
    from emosdk.export.quantize import fp16_bundle, update_manifest

    meta = load_bundle(bundle).meta
    opset18 = {}
    for role in ("fusion",):
        shutil.copy(bundle / f"{role}.onnx", bundle / f"{role}.opset18.onnx")
        opset18[role] = f"{role}.opset18.onnx"
    update_manifest(
        bundle,
        files={**meta["files"], **{f: "" for f in opset18.values()}},
        variants={"opset18": opset18},
    )
    fp16_bundle(bundle)
    b = load_bundle(bundle)
    assert b.meta["variants"]["opset18_fp16"] == {"fusion": "fusion.opset18.fp16.onnx"}
    assert engine_source(b, "fusion", "fp16", strong=True).name == "fusion.opset18.fp16.onnx"
    assert engine_source(b, "fusion", "fp16", strong=False).name == "fusion.opset18.onnx"
    assert engine_source(b, "audio_encoder", "fp16", strong=True).name == "audio_encoder.fp16.onnx"
    assert engine_source(b, "audio_encoder", "fp32", strong=True).name == "audio_encoder.onnx"


def test_fp16_from_the_command_line(bundle, capsys):
    from emosdk.export.cli import main

    assert main(["fp16", str(bundle), "--roles", "face_encoder"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "fp16": {"face_encoder": "face_encoder.fp16.onnx"}
    }
    assert load_bundle(bundle).meta["variants"]["fp16"] == {
        "face_encoder": "face_encoder.fp16.onnx"
    }


def test_fp16_stored_weights_halve_the_file_and_keep_float32_arithmetic(tmp_path, decoded_clips):
    """fp16_weights on the default bundle's face encoder: about half the bytes, outputs within
    float16 rounding of the original on real face crops, the input and outputs still float32."""
    import onnxruntime as ort

    from emosdk.export.quantize import float32_weights, fp16_weights
    from emosdk.features import normalize_face
    from emosdk.models import BUNDLED_DIR

    shipped = BUNDLED_DIR / "default" / "face_encoder.onnx"  # itself float16-stored
    src = float32_weights(shipped, tmp_path / "face_encoder.fp32.onnx")
    assert src.stat().st_size > 1.8 * shipped.stat().st_size
    dst = fp16_weights(src, tmp_path / "face_encoder.fp16w.onnx")
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    assert dst.read_bytes() == shipped.read_bytes()  # the round trip gives the shipped file
    with Recognizer() as rec:
        frames = [frame for _, _, clip in decoded_clips for _, frame in clip[:3]]
        crops = [c for f in frames for c in rec.face_crops(f)]
    assert len(crops) >= 6, "faces missing in the real clips"
    params = load_bundle(BUNDLED_DIR / "default").face
    x = np.stack([normalize_face(c, params) for c in crops]).astype(np.float32)
    x = x.reshape(len(crops), 1, params.size, params.size)
    outs = []
    for path in (src, dst):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].type == "tensor(float)"
        outs.append(sess.run(["face_emb"], {sess.get_inputs()[0].name: x})[0])
    assert outs[1].dtype == np.float32
    scale = float(np.abs(outs[0]).max())
    assert float(np.abs(outs[1] - outs[0]).max()) <= 2e-2 * max(scale, 1.0)


def test_fp16_of_an_int8_default_comes_from_its_opset18_copy(tmp_path):
    """The default bundle's CPU audio encoder is dynamic int8 (nothing float to convert); its
    fp16 variant is made once, from the opset-18 float copy, and serves both fp16 variant maps.
    Without such a copy the conversion is refused with the reason."""
    import onnx

    from emosdk.export.quantize import INTEGER_OPS, fp16_bundle, update_manifest
    from emosdk.models import BUNDLED_DIR

    dst = tmp_path / "default"
    shutil.copytree(BUNDLED_DIR / "default", dst)
    assert INTEGER_OPS & {n.op_type for n in onnx.load(str(dst / "audio_encoder.onnx")).graph.node}
    assert fp16_bundle(dst, roles=("audio_encoder",)) == {
        "audio_encoder": "audio_encoder.fp16.onnx"
    }
    meta = load_bundle(dst).meta
    assert meta["variants"]["opset18_fp16"] == {"audio_encoder": "audio_encoder.fp16.onnx"}
    assert not (dst / "audio_encoder.opset18.fp16.onnx").exists()
    ops = {n.op_type for n in onnx.load(str(dst / "audio_encoder.fp16.onnx")).graph.node}
    assert not ops & INTEGER_OPS
    assert max(meta["metrics"]["fp16_check"]["max_abs_diff"]["audio_encoder"].values()) < 0.05

    bare = tmp_path / "bare"
    shutil.copytree(BUNDLED_DIR / "default", bare)
    variants = {k: v for k, v in load_bundle(bare).meta["variants"].items() if k != "opset18"}
    files = {f: "" for f in load_bundle(bare).meta["files"] if f != "audio_encoder.opset18.onnx"}
    update_manifest(bare, variants=variants, files=files)
    with pytest.raises(QuantizationRejectedError, match="integer-quantised"):
        fp16_bundle(bare, roles=("audio_encoder",))
