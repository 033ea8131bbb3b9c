"""Property-based tests: whatever a caller passes to a public entry point, the only exceptions
that escape are emosdk's own (InputError / ConfigError, both EmosdkError and ValueError)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from emosdk import EmosdkError, Recognizer, RecognizerConfig
from emosdk.capture import ArraySource
from emosdk.features import FaceParams, LogMelParams, audio_features, normalize_face

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

dtypes = st.sampled_from(
    [np.int16, np.int32, np.float32, np.float64, np.uint8, np.int64, np.complex64, np.bool_]
)
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)
big_1d = st.integers(0, 20000).map(lambda n: (n,))


@st.composite
def arrays(draw, shape=None):
    dtype = draw(dtypes)
    shape = (
        draw(st.one_of(shapes, big_1d, st.just((2000, 2)), st.just((2000, 3))))
        if (shape is None)
        else shape
    )
    elements = None
    if np.dtype(dtype).kind == "f":
        elements = st.floats(
            allow_nan=True, allow_infinity=True, width=np.dtype(dtype).itemsize * 8
        )
    arr = draw(hnp.arrays(dtype, shape, elements=elements))
    if draw(st.booleans()) and arr.ndim >= 1 and arr.shape[0] > 1:
        arr = arr[::2]  # non-contiguous view
    return arr


valid_audio = st.integers(1, 40000).flatmap(
    lambda n: hnp.arrays(np.float32, (n,), elements=st.floats(-1, 1, width=32))
)
valid_face = hnp.array_shapes(min_dims=2, max_dims=2, min_side=8, max_side=64).flatmap(
    lambda hw: hnp.arrays(np.uint8, (*hw, 3))
)
anything = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.lists(st.floats(), max_size=5),
    st.booleans(),
    arrays(),
)
rates = st.one_of(
    st.integers(-10, 10**7),
    st.floats(allow_nan=True),
    st.just(16000),
    st.just(44100),
    st.text(max_size=3),
    st.none(),
)


def only_emosdk_errors(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except EmosdkError as e:
        assert str(e), "errors must say what was expected"
        return None


@pytest.fixture(scope="module")
def rec(fixture_bundle):
    with Recognizer(model=fixture_bundle) as r:
        yield r


@SETTINGS
@given(audio=st.one_of(arrays(), anything), sr=rates)
def test_audio_features_fuzz(audio, sr):
    out = only_emosdk_errors(audio_features, audio, sr, LogMelParams())
    if out is not None:
        assert out.dtype == np.float32 and np.isfinite(out).all()


@SETTINGS
@given(face=st.one_of(arrays(), anything))
def test_normalize_face_fuzz(face):
    out = only_emosdk_errors(normalize_face, face, FaceParams())
    if out is not None:
        assert out.shape == (1, 48, 48) and np.isfinite(out).all()


@SETTINGS
@given(
    audio=st.one_of(st.none(), valid_audio, arrays(), anything),
    sr=rates,
    face=st.one_of(
        st.none(),
        valid_face,
        arrays(),
        st.lists(st.one_of(st.none(), valid_face, arrays()), max_size=3),
    ),
)
def test_predict_fuzz(rec, audio, sr, face):
    r = only_emosdk_errors(rec.predict, audio=audio, face=face, sample_rate=sr)
    if r is not None and r.label is not None:
        assert abs(sum(r.scores.values()) - 1.0) < 1e-6


@SETTINGS
@given(frame=st.one_of(arrays(), st.lists(arrays(), max_size=2), anything))
def test_predict_frame_fuzz(rec, frame):
    only_emosdk_errors(rec.predict, frame=frame)


@SETTINGS
@given(
    kwargs=st.fixed_dictionaries(
        {},
        optional={
            "backend": st.one_of(st.sampled_from(["auto", "onnxruntime", "cuda"]), anything),
            "precision": st.one_of(st.sampled_from(["fp32", "int8", "fp16"]), anything),
            "window_s": st.one_of(st.none(), st.floats(), st.integers(-5, 100)),
            "hop_s": st.one_of(st.none(), st.floats(), st.integers(-5, 100)),
            "smoothing": st.one_of(st.sampled_from(["ema", "none"]), anything),
            "smoothing_alpha": st.one_of(st.floats(), anything),
            "num_threads": st.one_of(st.integers(-3, 300), anything),
            "providers": st.one_of(st.none(), st.lists(st.text(max_size=4), max_size=2), anything),
            "min_face_fraction": st.one_of(st.floats(), anything),
            "color_order": st.one_of(st.sampled_from(["bgr", "rgb"]), anything),
        },
    )
)
def test_config_fuzz(kwargs):
    only_emosdk_errors(RecognizerConfig, **kwargs)


@SETTINGS
@given(
    audio=st.one_of(st.none(), valid_audio, arrays()),
    sr=rates,
    frames=st.one_of(
        st.none(), arrays(), st.lists(st.one_of(st.none(), valid_face, arrays()), max_size=3)
    ),
    fps=st.one_of(st.floats(), st.integers(-2, 100)),
    chunk_s=st.one_of(st.floats(), anything),
)
def test_array_source_and_stream_fuzz(rec, audio, sr, frames, fps, chunk_s):
    src = only_emosdk_errors(
        ArraySource, audio=audio, sample_rate=sr, frames=frames, fps=fps, chunk_s=chunk_s
    )
    if src is None or src.duration_ms > 20_000:
        return
    results = only_emosdk_errors(lambda: list(rec.stream(source=src)))
    if results:
        ts = [r.timestamp_ms for r in results]
        assert ts == sorted(ts)
