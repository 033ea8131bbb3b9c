"""Each way found to make the SDK break its promise, attacked again: a typed EmosdkError or a
degraded result with a reason, never silence, never a stream without end, never an untyped
crash; a tampered copy of the released default bundle is refused."""

import json
import logging
import os
import re
import shutil
import threading

import numpy as np
import pytest

from emosdk import (
    ConfigError,
    EmosdkError,
    InputError,
    Modality,
    ModelError,
    Recognizer,
    RecognizerConfig,
)
from emosdk.capture import ArraySource, AudioChunk, HealthEvent, Tick, VideoFrame
from emosdk.models import BUNDLED_DIR
from emosdk.models.bundle import load_bundle

DEFAULT = BUNDLED_DIR / "default"


@pytest.fixture(scope="module")
def rec(fixture_bundle):
    with Recognizer(model=fixture_bundle) as r:
        yield r


@pytest.fixture
def released(tmp_path):
    """A copy of the released default bundle, to tamper with."""
    dst = tmp_path / "default"
    shutil.copytree(DEFAULT, dst)
    return dst


def edit_manifest(bundle, edit):
    path = bundle / "model.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


class Replay:
    """A custom source over real events; it can raise, return odd things, and records close()."""

    def __init__(self, events=(), *, fail_at=None, on_call=None, close_raises=False):
        self._events, self.fail_at, self.on_call = list(events), fail_at, on_call
        self.close_raises, self.closed = close_raises, False

    def events(self):
        if self.on_call is not None:
            return self.on_call()
        return self._gen()

    def _gen(self):
        for i, ev in enumerate(self._events):
            if i == self.fail_at:
                raise OSError("device unplugged")
            yield ev

    def close(self):
        self.closed = True
        if self.close_raises:
            raise RuntimeError("close failed")


def speech_events(decoded_clips, seconds=2.0):
    _, audio, frames = decoded_clips[3]
    n = int(seconds * 16000)
    events = [AudioChunk(k / 16.0, audio[k : k + 1600], 16000) for k in range(0, n, 1600)]
    events += [VideoFrame(t, img) for t, img in frames if t < seconds * 1000]
    return sorted(events, key=lambda e: e.t_ms)


# -- 1. silent empty streams --------------------------------------------------------------------
def test_a_truncated_media_file_is_an_input_error_or_degraded_never_silent(rec, av_clips, tmp_path):
    data = av_clips[3].read_bytes()
    tiny, tenth = tmp_path / "tiny.flv", tmp_path / "tenth.flv"
    tiny.write_bytes(data[:2000])  # the header only: nothing decodes
    tenth.write_bytes(data[: len(data) // 10])  # decodes a little, then PyAV raises
    with pytest.raises(InputError, match="tiny.flv"):
        rec.stream(source=tiny)
    results = list(rec.stream(source=tenth))
    assert results and results[-1].degraded
    assert "source failed" in results[-1].reason


@pytest.mark.parametrize(
    "source",
    [
        Replay([Tick(0.0)], fail_at=0),  # raises before its first event
        Replay(on_call=lambda: None),  # events() returns None
        Replay(on_call=lambda: 42),  # ... or something that is not iterable
        Replay(on_call=lambda: (_ for _ in ()).throw(OSError("no device"))),
        Replay(),  # delivers nothing at all
    ],
)
def test_a_source_that_fails_or_delivers_nothing_gives_a_degraded_result(rec, source):
    results = list(rec.stream(source=source))
    assert len(results) == 1 and results[0].label is None
    assert results[0].missing[Modality.AUDIO] and results[0].missing[Modality.VIDEO]
    assert source.closed


def test_events_that_are_a_list_stream_like_a_generator(rec, decoded_clips):
    events = speech_events(decoded_clips)
    as_list = list(rec.stream(source=Replay(on_call=lambda: list(events))))
    as_gen = list(rec.stream(source=Replay(events)))
    assert [r.scores for r in as_list] == [r.scores for r in as_gen] and len(as_list) >= 4


# -- 6. events() raising when called ------------------------------------------------------------
def test_events_raising_when_called_is_a_degraded_result_and_the_source_is_closed(rec):
    def boom():
        raise PermissionError("camera busy")

    src = Replay(on_call=boom)
    (only,) = rec.stream(source=src)
    assert "source failed: PermissionError: camera busy" in only.reason
    assert src.closed


# -- 2. streams that never end ------------------------------------------------------------------
def test_a_clock_jump_gives_at_most_one_window_of_empty_hops(rec, decoded_clips):
    events = speech_events(decoded_clips)
    jumped = [*events, Tick(1e12), AudioChunk(1e12 + 10, np.zeros(1600, np.float32), 16000)]
    results = list(rec.stream(source=Replay(jumped)))
    n_before = len(list(rec.stream(source=Replay(events))))
    assert len(results) <= n_before + rec.window_s / rec.hop_s + 4
    assert results[-1].timestamp_ms >= 1e12


def test_infinite_or_huge_times_never_hang_the_stream(rec, decoded_clips):
    events = [*speech_events(decoded_clips), Tick(float("inf")), Tick(1e300)]
    results = list(rec.stream(source=Replay(events)))
    assert 4 <= len(results) <= 6
    with pytest.raises(InputError, match="start_ms"):
        ArraySource(audio=np.zeros(1600, np.float32), start_ms=1e300)


@pytest.mark.parametrize("hop", [0, -0.5, 1e-4])
def test_tiny_zero_or_negative_hops_are_refused(released, hop):
    with pytest.raises(ConfigError, match="hop_s"):
        RecognizerConfig(hop_s=hop)
    edit_manifest(released, lambda m: m["stream"].update(hop_s=hop))
    with pytest.raises(ModelError, match="hop_s"):
        load_bundle(released)


# -- 3. variants are integrity-checked like every graph -----------------------------------------
def test_an_unlisted_variant_is_refused(released):
    shutil.copy(released / "fusion.onnx", released / "unlisted.onnx")
    edit_manifest(released, lambda m: m["variants"]["int8"].update(fusion="unlisted.onnx"))
    with pytest.raises(ModelError, match="no SHA-256"):
        Recognizer(model=released, precision="int8")


def test_a_byte_flipped_variant_graph_is_refused(released):
    # a graph that only a variant names (the default runs none of it) is checked all the same
    meta = json.loads((released / "model.json").read_text())
    default_files = {g["file"] for g in meta["graphs"].values()}
    variant_only = sorted(
        {f for v in meta["variants"].values() for f in v.values()} - default_files
    )
    assert variant_only, "the released bundle has no variant-only graph to corrupt"
    target = released / variant_only[0]
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x40
    target.write_bytes(bytes(data))
    for precision in ("int8", "fp32"):  # every listed file is checked, whatever runs
        with pytest.raises(ModelError, match=re.escape(target.name) + ".*SHA-256 mismatch"):
            Recognizer(model=released, precision=precision)


def test_a_variant_outside_the_bundle_is_refused(released):
    outside = released.parent / "outside.onnx"
    shutil.copy(released / "fusion.onnx", outside)
    digest = json.loads((released / "model.json").read_text())["files"]["fusion.onnx"]

    def edit(m):
        m["files"]["../outside.onnx"] = digest
        m["variants"]["int8"]["fusion"] = "../outside.onnx"

    edit_manifest(released, edit)
    with pytest.raises(ModelError, match="outside the bundle"):
        Recognizer(model=released, precision="int8")


# -- 4. one Recognizer, four threads ------------------------------------------------------------
def test_one_recognizer_used_from_four_threads_gives_the_sequential_results(
    fixture_bundle, decoded_clips
):
    jobs = []
    for _, audio, frames in decoded_clips:
        imgs = [f for _, f in frames[::8]]
        jobs += [dict(frame=imgs), dict(audio=audio, frame=imgs[:3]), dict(audio=audio)]
    with Recognizer(model=fixture_bundle) as rec:
        expected = [rec.predict(**j, timestamp_ms=0.0).raw_scores for j in jobs]
        got: dict[int, object] = {}
        errors: list[BaseException] = []

        def work(k):
            try:
                for _ in range(2):
                    for i in range(k, len(jobs), 4):
                        got[i] = rec.predict(**jobs[i], timestamp_ms=0.0).raw_scores
            except BaseException as e:  # collected and re-raised below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        streams = []

        def stream(i):
            streams.append((i, [r.scores for r in rec.stream(source=decoded_clips[i][0])]))

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for i, scores in streams:
            assert scores == [r.scores for r in rec.stream(source=decoded_clips[i][0])]
    assert not errors, errors
    for i, scores in got.items():
        assert scores == pytest.approx(expected[i], abs=1e-6), i


# -- 5. float colour frames ---------------------------------------------------------------------
def test_float64_colour_frames_work_in_predict_and_in_a_stream(rec, decoded_clips):
    _, audio, frames = decoded_clips[3]
    as_float = [(f / 255.0).astype(np.float64) for _, f in frames[::6]]
    r = rec.predict(frame=as_float)
    assert Modality.VIDEO in r.modalities
    src = ArraySource(audio=audio, frames=as_float, fps=29.97 / 6)
    results = list(rec.stream(source=src))
    assert any(Modality.VIDEO in x.modalities for x in results)


# -- 7. malformed events are dropped, never fatal -----------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        Tick(float("nan")),
        Tick(float("-inf")),
        Tick(None),
        Tick("500"),
        None,
        (500.0, "tick"),
        HealthEvent(500.0, "speech", False, "x"),
        VideoFrame(500.0, np.zeros((1, 1, 3), np.uint8)),
    ],
)
def test_malformed_events_are_dropped_and_the_stream_goes_on(rec, decoded_clips, bad, caplog):
    events = speech_events(decoded_clips)
    events.insert(len(events) // 2, bad)
    with caplog.at_level(logging.WARNING, logger="emosdk"):
        results = list(rec.stream(source=Replay(events)))
    clean = list(rec.stream(source=Replay(speech_events(decoded_clips))))
    assert [r.timestamp_ms for r in results] == [r.timestamp_ms for r in clean]
    assert "dropping a malformed" in caplog.text


def test_a_string_modality_names_the_modality(rec, decoded_clips):
    events = speech_events(decoded_clips)
    events.insert(3, HealthEvent(200.0, "audio", False, "mic muted by the user"))
    results = list(rec.stream(source=Replay(events)))
    assert results[-1].reason.startswith("audio: mic muted by the user")


def test_only_tiny_video_frames_say_why_video_is_missing(rec):
    frames = [VideoFrame(t, np.zeros((1, 1, 3), np.uint8)) for t in range(0, 1500, 100)]
    results = list(rec.stream(source=Replay(frames)))
    assert results and all("frames dropped" in r.missing[Modality.VIDEO] for r in results)
    assert "at least 8x8" in results[0].missing[Modality.VIDEO]


def test_out_of_order_frames_are_counted_and_close_errors_are_logged(rec, decoded_clips, caplog):
    events = speech_events(decoded_clips)
    late = next(e for e in events if isinstance(e, VideoFrame))
    events.append(VideoFrame(late.t_ms, late.image))  # long after later frames
    session = rec.open_stream()
    for ev in events:
        session.push(ev)
    session.finish()
    assert session.dropped["video frame out of order"] == 1
    src = Replay(speech_events(decoded_clips), close_raises=True)
    with caplog.at_level(logging.WARNING, logger="emosdk"):
        assert list(rec.stream(source=src))
    assert "closing the source failed" in caplog.text and src.closed


# -- 8, 9, 11. a tampered model.json ------------------------------------------------------------
def test_a_symlink_loop_in_a_bundle_is_a_model_error(released):
    os.symlink("loop_b", released / "loop_a")
    os.symlink("loop_a", released / "loop_b")
    edit_manifest(released, lambda m: m["files"].update(loop_a="0" * 64))
    with pytest.raises(ModelError, match="loop_a"):
        load_bundle(released)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m["graphs"]["fusion"].update(file=["fusion.onnx"]), "needs file"),
        (lambda m: m["graphs"]["fusion"].update(inputs="audio"), "inputs must be a list"),
        (lambda m: m["graphs"]["fusion"]["inputs"].pop(1), "audio_mask"),
        (lambda m: m["graphs"]["audio_encoder"].update(outputs=[]), "audio_emb"),
        (lambda m: m["stream"].update(window_s="3"), "window_s"),
        (lambda m: m["stream"].update(window_s=None), "window_s"),
        (lambda m: m["stream"].update(video_fps=0), "video_fps"),
        (lambda m: m["stream"].update(audio_frames_per_step=0), "audio_frames_per_step"),
        (lambda m: m["audio"].update(hop_length=160.5), "hop_length"),
        (lambda m: m["face"].update(size=47.5), "size"),
        (lambda m: m["audio"].update(n_fft=-512), "n_fft|win_length"),
        (lambda m: m.update(variants=["int8"]), "variants"),
        (lambda m: m["variants"].update(int8="fusion.int8.onnx"), "variants.int8"),
        (lambda m: m["files"].update({"a\0b.onnx": "0" * 64}), "relative file name"),
        (lambda m: m["files"].update({"fusion.onnx": 12}), "SHA-256"),
        (
            lambda m: m.update(labels=["anger", "anger", "fear", "happiness", "neutral", "x"]),
            "repeat",
        ),
    ],
)
def test_each_malformed_value_is_a_model_error(released, edit, match):
    edit_manifest(released, edit)
    with pytest.raises(ModelError, match=match):
        load_bundle(released)


def test_a_deeply_nested_manifest_is_a_model_error(released):
    (released / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelError, match="model.json"):
        load_bundle(released)


# -- 10. the label count is checked against the real graph at load ------------------------------
def test_a_wrong_label_count_behind_a_symbolic_output_is_caught_at_load(released):
    def edit(m):
        m["labels"] = m["labels"][:5]
        for out in m["graphs"]["fusion"]["outputs"]:
            out["shape"] = ["B", "classes"]

    edit_manifest(released, edit)
    load_bundle(released)  # the declared interface cannot tell
    with pytest.raises(ModelError, match=r"logits have shape \(1, 6\).*5"):
        Recognizer(model=released)


# -- 12. frames with too many channels ----------------------------------------------------------
def test_frames_with_too_many_channels_are_input_errors(rec, decoded_clips):
    frame = decoded_clips[3][2][10][1]
    with pytest.raises(InputError, match="channels"):
        rec.predict(frame=np.ascontiguousarray(np.repeat(frame[..., :1], 8, axis=2)))
    rgba = np.ascontiguousarray(np.concatenate([frame, frame[..., :1]], axis=2))
    with pytest.raises(InputError, match="alpha"):
        rec.predict(frame=rgba)


# -- 13. the work of one predict is bounded -----------------------------------------------------
def test_audio_at_high_rates_is_bounded_by_samples_not_only_seconds(rec, decoded_clips):
    _, audio, _ = decoded_clips[0]
    with pytest.raises(InputError, match="samples"):
        rec.predict(audio=np.zeros(59 * 384_000, np.float32), sample_rate=384_000)
    up = np.repeat(audio, 24)  # the real clip at 384 kHz (sample-and-hold), 2.3 s
    r = rec.predict(audio=up, sample_rate=384_000)
    assert r.modalities == (Modality.AUDIO,)


# -- 14. config -----------------------------------------------------------------------------------
def test_unknown_fields_and_extra_positional_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="unknown"):
        RecognizerConfig(unknown=1)
    with pytest.raises(ConfigError, match="positional"):
        RecognizerConfig(*range(40))
    with pytest.raises(ConfigError, match="unknown"):
        Recognizer(model="default", shmoothing="none")


def test_every_error_here_is_an_emosdk_error():
    assert issubclass(ConfigError, EmosdkError) and issubclass(ModelError, EmosdkError)
