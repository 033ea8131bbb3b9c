"""The ONNX Runtime backend: validation against the declared spec, timing, provider choice."""

import dataclasses

import numpy as np
import pytest

from emosdk import BackendUnavailableError, InputError
from emosdk.backends import OnnxRuntimeBackend, create_backend
from emosdk.backends.onnxruntime import provider_chain
from emosdk.errors import BackendError, ModelError
from emosdk.models.bundle import TensorSpec, load_bundle


@pytest.fixture(scope="module")
def fusion(fixture_bundle):
    b = load_bundle(fixture_bundle)
    backend = create_backend("auto", b.graph_path("fusion"), b.graphs["fusion"])
    yield backend
    backend.close()


def feeds(ta=12, tv=15, d=16, batch=1):
    rng = np.random.default_rng(0)
    return {
        "audio": rng.standard_normal((batch, ta, d)).astype(np.float32),
        "audio_mask": np.ones((batch, ta), np.float32),
        "video": rng.standard_normal((batch, tv, d)).astype(np.float32),
        "video_mask": np.ones((batch, tv), np.float32),
    }


def test_infer_runs_a_real_session_and_times_it(fusion):
    out = fusion.infer(feeds())
    assert list(out)[0] == "logits"
    assert out["logits"].shape == (1, 6) and np.isfinite(out["logits"]).all()
    assert fusion.last_ms > 0 and fusion.calls >= 1
    assert fusion.device == "CPUExecutionProvider"
    assert isinstance(fusion, OnnxRuntimeBackend)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("ta", "tv"), [(1, 1), (75, 15), (300, 30)])
def test_dynamic_batch_and_lengths(fusion, batch, ta, tv):
    assert fusion.infer(feeds(ta, tv, batch=batch))["logits"].shape == (batch, 6)


@pytest.mark.parametrize("which", ["audio_mask", "video_mask"])
def test_one_modality_fully_masked_still_gives_finite_logits(fusion, which):
    f = feeds()
    f[which][:] = 0.0
    f[which.replace("_mask", "")][:] = 0.0
    assert np.isfinite(fusion.infer(f)["logits"]).all()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda f: f.pop("audio"), "expected inputs"),
        (lambda f: f.update(extra=np.zeros(1, np.float32)), "expected inputs"),
        (lambda f: f.update(audio=f["audio"].astype(np.float64)), "dtype"),
        (lambda f: f.update(audio=f["audio"][0]), "shape"),
        (lambda f: f.update(audio=np.zeros((1, 12, 7), np.float32)), "shape"),
        (lambda f: f.update(audio_mask=np.ones((1, 11), np.float32)), "dimension"),
        (lambda f: f.update(video=np.zeros((1, 0, 16), np.float32)), "empty"),
        (lambda f: f.update(video=np.full((1, 15, 16), np.nan, np.float32)), "finite"),
        (lambda f: f.update(video=np.zeros((1, 16, 30), np.float32)[:, :, :16]), "contiguous"),
        (lambda f: f.update(video=[[0.0]]), "numpy"),
    ],
)
def test_bad_feeds_raise_input_error_with_the_declared_form(fusion, mutate, match):
    f = feeds()
    mutate(f)
    with pytest.raises(InputError, match=match):
        fusion.infer(f)


def test_closed_backend_refuses(fixture_bundle):
    b = load_bundle(fixture_bundle)
    backend = create_backend("onnxruntime", b.graph_path("face_encoder"), b.graphs["face_encoder"])
    backend.close()
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.infer({"face": np.zeros((1, 1, 48, 48), np.float32)})


def test_provider_chain_prefers_gpu_providers_and_passes_trt_options(tmp_path):
    avail = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    chain = provider_chain(avail, None, "fp16", tmp_path)
    assert [c if isinstance(c, str) else c[0] for c in chain] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    trt_opts = chain[0][1]
    assert trt_opts["trt_fp16_enable"] is True
    assert trt_opts["trt_engine_cache_path"] == str(tmp_path)
    assert provider_chain(["CPUExecutionProvider"], None, "fp32", None) == ["CPUExecutionProvider"]
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        provider_chain(["CPUExecutionProvider"], ("CUDAExecutionProvider",), "fp32", None)


def test_unavailable_backends_and_precisions_say_what_to_install(fixture_bundle):
    b = load_bundle(fixture_bundle)
    spec, path = b.graphs["fusion"], b.graph_path("fusion")
    with pytest.raises(BackendUnavailableError, match="(?i)tensorrt"):
        create_backend("tensorrt", path, spec)
    import onnxruntime as ort

    gpu = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}
    if not gpu & set(ort.get_available_providers()):
        with pytest.raises(BackendUnavailableError, match="fp16.*GPU"):
            create_backend("auto", path, spec, precision="fp16")


def test_outputs_come_in_the_declared_order_and_must_exist_in_the_graph(fixture_bundle):
    # Backend.infer promises the declared output order (the TensorRT backend keeps it; callers
    # take the first output as the embedding), and a declared output the graph lacks is a
    # ModelError at load, not a KeyError in the middle of a prediction
    b = load_bundle(fixture_bundle)
    spec, path = b.graphs["face_encoder"], b.graph_path("face_encoder")
    reversed_spec = dataclasses.replace(spec, outputs=spec.outputs[::-1])
    backend = create_backend("onnxruntime", path, reversed_spec)
    out = backend.infer({"face": np.zeros((2, 1, 48, 48), np.float32)})
    assert list(out) == [t.name for t in reversed_spec.outputs] == ["face_logits", "face_emb"]
    backend.close()
    extra = dataclasses.replace(spec, outputs=(*spec.outputs, TensorSpec("x", ("B",), "float32")))
    with pytest.raises(ModelError, match=r"declares outputs \[.x.\]"):
        create_backend("onnxruntime", path, extra)
