"""Media decoding of the real clips, and the emosdk command-line tool."""

import json

import numpy as np
import pytest

from emosdk.capture import AudioChunk, VideoFrame
from emosdk.capture.media import MediaFileSource, read_media
from emosdk.cli import main
from emosdk.errors import InputError


def test_flv_clip_decodes_audio_and_video_on_one_timeline(av_clips):
    events = list(MediaFileSource(av_clips[0]).events())
    times = [e.t_ms for e in events]
    assert times == sorted(times)
    audio = [e for e in events if isinstance(e, AudioChunk)]
    video = [e for e in events if isinstance(e, VideoFrame)]
    assert {a.sample_rate for a in audio} == {16000}
    n = sum(len(a.pcm) for a in audio)
    span = video[-1].t_ms - video[0].t_ms
    # 29.97 fps VP6 video and MP3 audio of the same ~2.3 s recording
    assert 1.9 < n / 16000 < 2.4 and abs(n / 16 - span) < 150
    assert video[0].image.shape == (360, 480, 3) and video[0].image.dtype == np.uint8
    fps = (len(video) - 1) / (span / 1000)
    assert fps == pytest.approx(29.97, rel=0.02)


def test_mp3_clip_decodes_as_audio_only(speech_clips):
    audio, frames = read_media(speech_clips[0])
    assert frames == [] and 1.5 < len(audio) / 16000 < 3.5
    assert 0.01 < np.sqrt(np.mean(audio**2)) < 0.5  # real speech level, not silence


def test_media_errors(tmp_path):
    with pytest.raises(InputError, match="existing media file"):
        MediaFileSource(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(InputError, match="not a readable media file"):
        MediaFileSource(junk)


def test_cli_run_prints_a_result_per_hop(fixture_bundle, av_clips, capsys):
    assert main(["run", "--model", str(fixture_bundle), "--json", str(av_clips[0])]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) >= 4
    assert [x["timestamp_ms"] for x in lines[:4]] == [500.0, 1000.0, 1500.0, 2000.0]
    assert all(x["file"] == str(av_clips[0]) and "video" in x["modalities"] for x in lines)


def test_cli_table_and_errors(fixture_bundle, av_clips, capsys):
    assert main(["run", "--model", str(fixture_bundle), str(av_clips[1])]) == 0
    out = capsys.readouterr().out
    assert "most frequent" in out and "audio+video" in out
    assert main(["run", "--model", "no-such-model", str(av_clips[1])]) == 2
    assert "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "Stream media files" in capsys.readouterr().out


def test_cli_info_lists_backends(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {b["name"] for b in info["backends"]} == {"onnxruntime", "tensorrt"}


def test_streaming_an_audio_file_says_it_has_no_video(fixture_bundle, speech_clips):
    from emosdk import Modality, Recognizer

    with Recognizer(model=fixture_bundle) as rec:
        results = list(rec.stream(source=speech_clips[3]))
    assert len(results) >= 4
    assert all(r.missing[Modality.VIDEO] == "the file has no video stream" for r in results)
    assert any(r.modalities == (Modality.AUDIO,) for r in results)


def test_a_file_with_no_decodable_stream_is_an_error_naming_it(
    fixture_bundle, av_clips, tmp_path, capsys
):
    # random bytes named .mp4, and a real clip cut to its header (PyAV opens it: a data stream)
    rand = tmp_path / "random.mp4"
    rand.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    header = tmp_path / "header.flv"
    header.write_bytes(av_clips[0].read_bytes()[:2000])
    for bad in (rand, header):
        with pytest.raises(InputError, match=bad.name):
            MediaFileSource(bad)
        assert main(["run", "--model", str(fixture_bundle), str(bad)]) == 2
        err = capsys.readouterr().err
        assert bad.name in err and ("no audio or video" in err or "not a readable" in err)


def test_cli_samples_lists_the_shipped_recordings(capsys):
    from emosdk import samples

    assert main(["samples", "--kind", "av"]) == 0
    listed = capsys.readouterr().out.split()
    assert len(listed) == 6 and all(p.endswith(".flv") for p in listed)
    assert samples.path("1001_DFA_HAP_XX").name == "1001_DFA_HAP_XX.flv"
    assert samples.manifest().is_file() and len(samples.names()) == 12
    with pytest.raises(InputError, match="sample"):
        samples.path("nope")
