"""RecognizerConfig is checked at construction; contradictions name both fields."""

import pytest

from emosdk import Recognizer, RecognizerConfig
from emosdk.errors import ConfigError


def test_defaults_are_valid():
    c = RecognizerConfig()
    assert c.model == "default" and c.backend == "auto" and c.smoothing == "ema"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "cuda"}, "backend"),
        ({"precision": "fp8"}, "precision"),
        ({"smoothing": "kalman"}, "smoothing"),
        ({"smoothing_alpha": 0.0}, "smoothing_alpha"),
        ({"smoothing_alpha": 1.5}, "smoothing_alpha"),
        ({"window_s": -1.0}, "window_s"),
        ({"hop_s": "fast"}, "hop_s"),
        ({"num_threads": -2}, "num_threads"),
        ({"num_threads": True}, "num_threads"),
        ({"providers": "CPUExecutionProvider"}, "providers"),
        ({"model": ""}, "model"),
        ({"color_order": "yuv"}, "color_order"),
        ({"min_face_fraction": 2.0}, "min_face_fraction"),
        ({"verify_model": "yes"}, "verify_model"),
    ],
)
def test_invalid_fields_raise(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RecognizerConfig(**kwargs)


def test_contradictions_name_both_fields():
    with pytest.raises(ConfigError, match=r"hop_s.*window_s"):
        RecognizerConfig(window_s=1.0, hop_s=2.0)
    with pytest.raises(ConfigError, match=r"providers.*backend"):
        RecognizerConfig(backend="tensorrt", providers=("CPUExecutionProvider",))
    with pytest.raises(ConfigError, match=r"int8.*providers"):
        RecognizerConfig(
            backend="onnxruntime", precision="int8", providers=("CUDAExecutionProvider",)
        )


def test_hop_longer_than_the_models_window_is_refused(fixture_bundle):
    with pytest.raises(ConfigError, match=r"hop_s.*window_s"):
        Recognizer(model=fixture_bundle, hop_s=10.0)


def test_replace_and_overrides(fixture_bundle):
    c = RecognizerConfig(model=fixture_bundle).replace(hop_s=0.25)
    assert c.hop_s == 0.25
    with pytest.raises(ConfigError, match="unknown"):
        c.replace(hop=1)
    with Recognizer(c, smoothing="none") as rec:
        assert rec.config.smoothing == "none" and rec.hop_s == 0.25
    with pytest.raises(ConfigError, match="RecognizerConfig"):
        Recognizer(config={"model": "default"})
