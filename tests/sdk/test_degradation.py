"""Graceful degradation on media files written with PyAV from the real CREMA-D clips."""

import av
import numpy as np
import pytest

from emosdk import Modality, Recognizer


def write_clip(path, audio, frames, fps=30, black_from_s=None, mute=False):
    """Re-encode a decoded clip as mp4 (h264 + aac), optionally blacking out or muting it."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 480, 360, "yuv420p"
        a = out.add_stream("aac", rate=16000)
        a.layout = "mono"
        for i, (_, img) in enumerate(frames):
            if black_from_s is not None and i / fps >= black_from_s:
                img = np.zeros_like(img)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        pcm = np.zeros_like(audio) if mute else audio
        step = 1024
        for k in range(0, len(pcm), step):
            chunk = pcm[k : k + step].reshape(1, -1).astype(np.float32)
            f = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            f.sample_rate, f.pts = 16000, k
            for p in a.encode(f):
                out.mux(p)
        for p in a.encode():
            out.mux(p)


@pytest.fixture(scope="module")
def rec(fixture_bundle):
    with Recognizer(model=fixture_bundle) as r:
        yield r


@pytest.fixture(scope="module")
def long_clip(decoded_clips):
    """The real neutral clip played twice (about 4 s), so that several hops follow t = 1 s."""
    _, audio, frames = decoded_clips[4]
    return np.concatenate([audio, audio]), frames + frames


def test_black_video_from_one_second_switches_to_audio_within_one_hop(rec, long_clip, tmp_path):
    audio, frames = long_clip
    path = tmp_path / "black_from_1s.mp4"
    write_clip(path, audio, frames, black_from_s=1.0)
    results = list(rec.stream(source=path))
    by_t = {r.timestamp_ms: r for r in results}
    assert by_t[1000.0].modalities == (Modality.AUDIO, Modality.VIDEO)
    later = [r for r in results if r.timestamp_ms >= 1500.0]  # one hop after the face is gone
    assert len(later) >= 5, "results keep coming"
    for r in later:
        assert r.label is not None and Modality.VIDEO not in r.modalities, r.timestamp_ms
        assert "no face" in r.missing[Modality.VIDEO]
    assert all(r.modalities == (Modality.AUDIO,) for r in later if r.timestamp_ms <= 3500.0)


def test_muted_audio_gives_video_only_results(rec, long_clip, tmp_path):
    audio, frames = long_clip
    path = tmp_path / "muted.mp4"
    write_clip(path, audio, frames, mute=True)
    results = list(rec.stream(source=path))
    assert len(results) >= 8
    for r in results:
        assert r.modalities == (Modality.VIDEO,), r.timestamp_ms
        assert r.missing[Modality.AUDIO].startswith("silence")


@pytest.mark.parametrize("container", ["mp4", "avi", "webm"])  # flv: the real clips
def test_containers_decode_on_one_timeline(rec, decoded_clips, tmp_path, container):
    _, audio, frames = decoded_clips[0]
    codecs = {
        "mp4": ("libx264", "aac"),
        "avi": ("mpeg4", "libmp3lame"),
        "webm": ("libvpx-vp9", "libopus"),
        "flv": ("flv", "libmp3lame"),
    }
    vcodec, acodec = codecs[container]
    path = tmp_path / f"clip.{container}"
    rate = 48000 if acodec == "libopus" else 16000
    with av.open(str(path), "w") as out:
        v = out.add_stream(vcodec, rate=30)
        v.width, v.height, v.pix_fmt = 480, 360, "yuv420p"
        a = out.add_stream(acodec, rate=rate)
        a.layout = "mono"
        for _, img in frames:
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        from emosdk.features.audio import resample

        pcm = resample(audio, 16000, rate)
        fmt = "s16p" if acodec == "libmp3lame" else "fltp"
        for k in range(0, len(pcm), 1152):
            chunk = pcm[k : k + 1152].reshape(1, -1)
            if fmt == "s16p":
                chunk = (chunk * 32767).astype(np.int16)
            f = av.AudioFrame.from_ndarray(chunk, format=fmt, layout="mono")
            f.sample_rate, f.pts = rate, k
            for p in a.encode(f):
                out.mux(p)
        for p in a.encode():
            out.mux(p)
    results = list(rec.stream(source=path))
    assert len(results) >= 4
    assert results[-2].modalities == (Modality.AUDIO, Modality.VIDEO), container
