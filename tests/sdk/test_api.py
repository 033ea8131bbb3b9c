"""The public namespace is small and pinned: changing it is a deliberate, visible act."""

import emosdk

EXPECTED = [
    "BackendUnavailableError",
    "EmosdkError",
    "EmotionResult",
    "InputError",
    "Modality",
    "ModelError",
    "Recognizer",
    "RecognizerConfig",
    "__version__",
    "available_backends",
]


def test_public_names_are_pinned():
    assert sorted(emosdk.__all__) == EXPECTED
    for name in EXPECTED:
        assert hasattr(emosdk, name), name


def test_error_hierarchy():
    for name in ("InputError", "ModelError", "BackendUnavailableError"):
        assert issubclass(getattr(emosdk, name), emosdk.EmosdkError)
    assert issubclass(emosdk.InputError, ValueError)


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
