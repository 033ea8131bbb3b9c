"""emosdk-demo: headless JSON on a real clip, live with absent devices, and the drawn screen."""

import json

import numpy as np
import pytest

from emosdk.demo import build_parser, main, render
from emosdk.results import EmotionResult, Latency, Modality

LABELS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness")


def test_headless_on_a_real_clip_prints_a_result_per_hop(fixture_bundle, av_clips, capsys):
    assert main(["--headless", "--input", str(av_clips[2]), "--model", str(fixture_bundle)]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["timestamp_ms"] for r in rows[:4]] == [500.0, 1000.0, 1500.0, 2000.0]
    assert all("video" in r["modalities"] for r in rows)
    assert any(r["modalities"] == ["audio", "video"] for r in rows)


def test_headless_live_without_devices_still_reports(fixture_bundle, capsys):
    code = main(["--headless", "--no-camera", "--max-results", "2", "--model", str(fixture_bundle)])
    assert code == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2
    assert all(r["missing"]["video"] == "camera not used" for r in rows)


def test_demo_refuses_nothing_to_analyse(capsys):
    assert main(["--no-camera", "--no-microphone"]) == 2
    assert "nothing to analyse" in capsys.readouterr().err


def test_help_text_names_the_modes():
    text = build_parser().format_help()
    for flag in ("--headless", "--input", "--no-camera", "--no-microphone", "--screenshot"):
        assert flag in text


def test_render_draws_bars_in_proportion_and_modality_lights(decoded_clips):
    from emosdk.perception.face import HaarFaceDetector

    _, _, frames = decoded_clips[0]
    frame = frames[10][1]
    box = HaarFaceDetector().detect(frame)[0]
    scores = dict(zip(LABELS, [0.7, 0.1, 0.05, 0.05, 0.05, 0.05], strict=True))
    r = EmotionResult(
        "anger",
        scores,
        scores,
        1000.0,
        (0.0, 1000.0),
        (Modality.AUDIO,),
        {Modality.VIDEO: "no face"},
        {},
        Latency({}, 12.0),
    )
    img = render(frame, r, LABELS, box)
    assert img.shape == (480, 960, 3) and img.dtype == np.uint8
    panel = img[:, 640:]
    # the anger bar (row 0) is filled to 70 %: red pixels reach x = 110 + 0.7 * 190
    row = panel[80 + 12]
    filled = np.flatnonzero((row[:, 2] > 200) & (row[:, 0] < 100))
    assert filled.max() == pytest.approx(110 + 0.7 * 190, abs=3)
    audio_light = panel[80 + 6 * 40 + 10 + 8, 26]
    video_light = panel[80 + 6 * 40 + 10 + 28 + 8, 26]
    assert audio_light[1] > 150 and video_light[2] > 150  # green on, red off
    blank = render(None, None, LABELS)
    assert blank.shape == img.shape
