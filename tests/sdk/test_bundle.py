"""Bundle loading: integrity checks before use, clear errors naming the file."""

import json
import shutil

import pytest

from emosdk import ModelError, Recognizer
from emosdk.models import available_models, load_model, resolve_model
from emosdk.models.bundle import load_bundle


@pytest.fixture
def bundle_copy(fixture_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(fixture_bundle, dst)
    return dst


def test_fixture_bundle_loads_with_every_parameter(fixture_bundle):
    b = load_bundle(fixture_bundle)
    assert b.labels == ("anger", "disgust", "fear", "happiness", "neutral", "sadness")
    assert set(b.graphs) == {"audio_encoder", "face_encoder", "fusion"}
    assert b.graphs["fusion"].outputs[0].name == "logits"
    assert b.audio.sample_rate == 16000 and b.face.size == 48
    assert b.meta["data_card"]


def test_a_changed_byte_is_refused_naming_the_file(bundle_copy):
    target = bundle_copy / "fusion.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"fusion\.onnx.*SHA-256 mismatch"):
        load_bundle(bundle_copy)
    with pytest.raises(ModelError, match=r"fusion\.onnx"):
        Recognizer(model=bundle_copy)


def test_a_missing_file_is_named(bundle_copy):
    (bundle_copy / "face_encoder.onnx").unlink()
    with pytest.raises(ModelError, match=r"face_encoder\.onnx.*missing"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.pop("labels"), "labels"),
        (lambda m: m.update(format_version=99), "format_version"),
        (lambda m: m["audio"].pop("n_mels"), "n_mels"),
        (lambda m: m["graphs"].pop("fusion"), "missing graphs"),
        (lambda m: m["files"].update({"../escape.onnx": "0" * 64}), "outside"),
        (lambda m: m.update(labels=["a", "b"]), "6 classes but 2 labels"),
    ],
)
def test_malformed_manifest_raises_model_error(bundle_copy, edit, match):
    path = bundle_copy / "model.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=match):
        load_bundle(bundle_copy)


def test_not_json_and_not_a_bundle(tmp_path, bundle_copy):
    (bundle_copy / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="JSON"):
        load_bundle(bundle_copy)
    with pytest.raises(ModelError, match="not a model bundle"):
        resolve_model(tmp_path / "nothing-here")
    with pytest.raises(ModelError, match="unknown model"):
        load_model("no-such-model")


def test_bundled_models_are_listed_and_verified():
    for name in available_models():
        b = load_model(name)
        # issue 16's ceiling for the Whisper-branch bundle (TensorRT's 9.6 MB copy of the audio
        # encoder included; docs/models.md); the seed bundle was 19.2 MB
        assert b.size_bytes <= 25e6, f"bundled model {name} is {b.size_bytes / 1e6:.1f} MB"
        assert b.meta.get("metrics") and b.meta.get("data_card")


def test_the_bundle_names_its_audio_front_end(bundle_copy):
    from emosdk.features.audio import LogMelParams
    from emosdk.features.whisper import WhisperMelParams

    assert isinstance(load_bundle(bundle_copy).audio, LogMelParams)  # no key: the old front end
    path = bundle_copy / "model.json"
    meta = json.loads(path.read_text())
    meta["audio"] = WhisperMelParams().to_dict()
    path.write_text(json.dumps(meta))
    audio = load_bundle(bundle_copy).audio
    assert isinstance(audio, WhisperMelParams) and audio.n_mels == 80
    meta["audio"]["frontend"] = "mfcc"
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="frontend"):
        load_bundle(bundle_copy)


def test_perception_graphs_are_listed_and_hash_checked(bundle_copy):
    import hashlib

    from emosdk.models import BUNDLED_DIR

    src = BUNDLED_DIR / "default" / "face_detector.onnx"
    shutil.copy(src, bundle_copy / "face_detector.onnx")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    spec = {
        "file": "face_detector.onnx",
        "inputs": [{"name": "image", "shape": [1, 128, 128, 3], "dtype": "float32"}],
        "outputs": [
            {"name": "regressors", "shape": [1, 896, 16], "dtype": "float32"},
            {"name": "classificators", "shape": [1, 896, 1], "dtype": "float32"},
        ],
    }
    path = bundle_copy / "model.json"
    meta = json.loads(path.read_text())
    meta["perception"] = {"face_detector": spec}
    meta["files"]["face_detector.onnx"] = digest
    path.write_text(json.dumps(meta))
    b = load_bundle(bundle_copy)
    assert b.perception_path("face_detector") == bundle_copy / "face_detector.onnx"
    assert b.perception_path("face_landmarks") is None
    data = bytearray((bundle_copy / "face_detector.onnx").read_bytes())
    data[1000] ^= 1
    (bundle_copy / "face_detector.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"face_detector\.onnx.*SHA-256"):
        load_bundle(bundle_copy)
    for edit, match in (
        (lambda m: m["perception"].update(face_mesh=spec), "unknown perception"),
        (
            lambda m: m["graphs"].update(face_detector=m["perception"].pop("face_detector")),
            "belong under perception",
        ),
        (lambda m: m["perception"]["face_detector"]["outputs"].pop(), "classificators"),
    ):
        edited = json.loads(json.dumps(meta))
        edit(edited)
        path.write_text(json.dumps(edited))
        with pytest.raises(ModelError, match=match):
            load_bundle(bundle_copy, verify=False)
