"""Property-based attacks through the public API: custom sources with random event kinds,
timestamps, payloads and exceptions at random points, and random mutations of a real bundle's
model.json. Only results or typed errors may come out; a stream gives a bounded number of
results per second of input and always closes its source."""

import copy
import json
import math
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emosdk import EmosdkError, EmotionResult, Modality, Recognizer
from emosdk.capture import AudioChunk, HealthEvent, Tick, VideoFrame
from emosdk.models.bundle import load_bundle

SETTINGS = settings(
    # EMOSDK_FUZZ_EXAMPLES=1500 for a longer hunt (about 2 minutes); CI runs the default
    max_examples=int(os.environ.get("EMOSDK_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

times = st.one_of(
    st.floats(-5_000, 20_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e12, -1e12, 1e300, 0.0]),
    st.none(),
    st.text(max_size=3),
)
rates = st.one_of(st.sampled_from([8000, 16000, 44100, 48000]), st.integers(-5, 10**6), st.none())


@st.composite
def pcm(draw):
    n = draw(st.integers(0, 4000))
    kind = draw(st.sampled_from(["speech", "noise", "int16", "bad"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "int16":
        return (rng.standard_normal(n) * 3000).astype(np.int16)
    if kind == "bad":
        return draw(st.sampled_from([None, "pcm", np.zeros((3, 3, 3)), np.full(10, np.nan)]))
    scale = 0.3 if kind == "speech" else 0.001
    return (rng.standard_normal(n) * scale).astype(np.float32)


@st.composite
def image(draw, frames):
    kind = draw(st.sampled_from(["real", "real", "blank", "bad"]))
    if kind == "real":
        return frames[draw(st.integers(0, len(frames) - 1))]
    if kind == "blank":
        return np.zeros((draw(st.integers(8, 64)), draw(st.integers(8, 64)), 3), np.uint8)
    return draw(
        st.sampled_from(
            [None, np.zeros((1, 1), np.uint8), np.zeros((4, 40, 40)), np.zeros((40, 40, 9))]
        )
    )


@st.composite
def event(draw, frames):
    kind = draw(st.sampled_from(["audio", "audio", "video", "video", "health", "tick", "junk"]))
    t = draw(times)
    if kind == "audio":
        return AudioChunk(t, draw(pcm()), draw(rates))
    if kind == "video":
        return VideoFrame(t, draw(image(frames)), draw(st.booleans()))
    if kind == "health":
        modality = draw(st.sampled_from([Modality.AUDIO, Modality.VIDEO, "audio", "speech", 3]))
        return HealthEvent(t, modality, draw(st.booleans()), draw(st.sampled_from(["lost", 7])))
    if kind == "tick":
        return Tick(t)
    return draw(st.sampled_from([None, (0.0, "x"), 5, "event"]))


class FuzzSource:
    def __init__(self, events, fail, mode, close_raises):
        self._events, self.fail, self.mode = events, fail, mode
        self.close_raises, self.closed = close_raises, False

    def events(self):
        if self.mode == "raise":
            raise OSError("cannot start")
        if self.mode == "list":
            return list(self._events)
        if self.mode == "none":
            return None
        return self._gen()

    def _gen(self):
        for i, ev in enumerate(self._events):
            if i == self.fail:
                raise RuntimeError("failed mid-stream")
            yield ev

    def close(self):
        self.closed = True
        if self.close_raises:
            raise OSError("close failed")


@pytest.fixture(scope="module")
def rec(fixture_bundle):
    with Recognizer(model=fixture_bundle, hop_s=0.25) as r:
        yield r


@pytest.fixture(scope="module")
def real_frames(decoded_clips):
    return [f for _, f in decoded_clips[3][2][::10]]


def finite_time(ev):
    """An event's time when it is a usable one (finite, within the SDK's +-1e14 ms), else None."""
    t = getattr(ev, "t_ms", None)
    ok = isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
    return float(t) if ok and abs(t) <= 1e14 else None


def bound(events, hop_s, window_s):
    """Most results a stream may give: one per hop of the usable time span (far jumps aside),
    plus one window of empty hops for each jump to or from a far time."""
    ts = [t for t in map(finite_time, events) if t is not None]
    near = [t for t in ts if abs(t) < 1e11]
    span = (max(near) - min(near)) / 1000.0 if near else 0.0
    jumps = 2 * (len(ts) - len(near))
    return span / hop_s + 3 + jumps * (window_s / hop_s + 2)


@SETTINGS
@given(data=st.data())
def test_custom_sources_give_only_results_bounded_in_number_and_are_closed(rec, real_frames, data):
    events = data.draw(st.lists(event(real_frames), max_size=30))
    if data.draw(st.booleans()):  # mostly in time order, as sources promise; sometimes not
        events.sort(key=lambda e: finite_time(e) or 0.0)
    source = FuzzSource(
        events,
        fail=data.draw(st.one_of(st.none(), st.integers(0, 30))),
        mode=data.draw(st.sampled_from(["gen", "gen", "gen", "list", "none", "raise"])),
        close_raises=data.draw(st.booleans()),
    )
    results = list(rec.stream(source=source))
    assert source.closed
    assert results and all(isinstance(r, EmotionResult) for r in results)
    assert len(results) <= bound(events, rec.hop_s, rec.window_s)
    for r in results:
        assert r.label is None or abs(sum(r.scores.values()) - 1) < 1e-6
        assert r.degraded == bool(r.missing) and (r.reason is None) == (not r.missing)


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-10, 10**6),
        st.floats(allow_nan=False),
        st.text(max_size=6),
    ),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3)
    ),
    max_leaves=6,
)


def paths(meta, prefix=()):
    """Every key path in a JSON object."""
    out = []
    if isinstance(meta, dict):
        items = meta.items()
    elif isinstance(meta, list):
        items = enumerate(meta)
    else:
        return out
    for k, v in items:
        out.append((*prefix, k))
        out += paths(v, (*prefix, k))
    return out


@pytest.fixture(scope="module")
def bundle_dir(fixture_bundle, tmp_path_factory):
    dst = tmp_path_factory.mktemp("fuzz") / "bundle"
    shutil.copytree(fixture_bundle, dst)
    return dst


@SETTINGS
@given(data=st.data())
def test_mutated_manifests_load_or_raise_model_errors(bundle_dir, fixture_bundle, data):
    original = json.loads((fixture_bundle / "model.json").read_text())
    meta = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(paths(meta) or [("labels",)]))
        parent = meta
        for k in where[:-1]:
            parent = parent[k]
        action = data.draw(st.sampled_from(["set", "delete", "nest"]))
        if action == "delete" and isinstance(parent, dict):
            parent.pop(where[-1], None)
        elif action == "nest":
            parent[where[-1]] = [[[parent[where[-1]]]]]
        else:
            parent[where[-1]] = data.draw(json_values)
    (bundle_dir / "model.json").write_text(json.dumps(meta))
    try:
        bundle = load_bundle(bundle_dir)
    except EmosdkError as e:
        assert str(e)
        return
    try:  # it loaded: the Recognizer opens it or refuses it with a typed error
        with Recognizer(model=bundle_dir, smoothing="none") as r:
            r.predict(audio=np.zeros(16000, np.float32))
    except EmosdkError as e:
        assert str(e)
    assert bundle.labels
