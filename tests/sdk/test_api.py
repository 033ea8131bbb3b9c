"""The public namespace is small and pinned: changing it is a deliberate, visible act."""

import emosdk

EXPECTED = [
    "BackendError",
    "BackendUnavailableError",
    "ConfigError",
    "EmosdkError",
    "EmotionResult",
    "InputError",
    "Modality",
    "ModelError",
    "Recognizer",
    "RecognizerConfig",
    "SourceError",
    "__version__",
    "available_backends",
]


def test_public_names_are_pinned():
    assert sorted(emosdk.__all__) == EXPECTED
    for name in EXPECTED:
        assert hasattr(emosdk, name), name


def test_error_hierarchy():
    for name in (
        "InputError",
        "ConfigError",
        "ModelError",
        "BackendUnavailableError",
        "BackendError",
        "SourceError",
    ):
        assert issubclass(getattr(emosdk, name), emosdk.EmosdkError)
    assert issubclass(emosdk.InputError, ValueError)
    assert issubclass(emosdk.ConfigError, ValueError)


def test_every_error_the_sdk_defines_is_exported():
    import inspect

    import emosdk.errors

    defined = {
        n
        for n, c in inspect.getmembers(emosdk.errors, inspect.isclass)
        if issubclass(c, emosdk.EmosdkError)
    }
    assert defined <= set(emosdk.__all__)


def test_latency_stages_are_declared_properties():
    from emosdk.results import Latency

    lat = Latency({"fusion": 1.5, "audio_encoder": 2.0}, 4.0)
    assert lat.fusion_ms == 1.5 and lat.audio_encoder_ms == 2.0 and lat.face_encoder_ms is None
    names = [n for n, v in vars(Latency).items() if isinstance(v, property)]
    assert {"fusion_ms", "audio_encoder_ms", "face_detect_ms", "smoothing_ms"} <= set(names)


def test_version_matches_package_metadata():
    from importlib.metadata import version

    assert emosdk.__version__ == version("emosdk")


def test_runtime_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, emosdk, emosdk.recognizer, emosdk.capture, emosdk.perception, emosdk.cli; "
        "assert 'torch' not in sys.modules, 'runtime imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_available_backends_reports_every_backend_with_a_reason():
    statuses = {s.name: s for s in emosdk.available_backends()}
    assert set(statuses) == {"onnxruntime", "tensorrt"}
    assert statuses["onnxruntime"].available
    assert "CPUExecutionProvider" in statuses["onnxruntime"].devices
    trt = statuses["tensorrt"]
    if not trt.available:
        assert "install" in trt.detail.lower() or "no cuda" in trt.detail.lower()
