"""Shared fixtures: the real clips in tests/data, the fixture bundle, and ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent
REPO = TESTS.parent
DATA = TESTS / "data"
CLIPS = DATA / "cremad"
FIXTURE_BUNDLE = DATA / "fixture_bundle"
SHARED_DATA = REPO.parent / "shared" / "data"
LABELS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness")
CODES = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happiness",
    "NEU": "neutral",
    "SAD": "sadness",
}


@pytest.fixture(scope="session")
def fixture_bundle() -> Path:
    """A small bundle of real torch modules with random weights (plumbing only)."""
    assert (FIXTURE_BUNDLE / "model.json").is_file(), (
        "tests/data/fixture_bundle is missing: run python tests/fixtures/make_fixture_bundle.py"
    )
    return FIXTURE_BUNDLE


@pytest.fixture(scope="session")
def av_clips() -> list[Path]:
    """The six real CREMA-D audio-visual clips (actor 1001, one per class)."""
    clips = sorted(CLIPS.glob("1001_*.flv"))
    assert len(clips) == 6, "tests/data/cremad must hold the six CREMA-D flv clips"
    return clips


@pytest.fixture(scope="session")
def speech_clips() -> list[Path]:
    """The six real CREMA-D audio-only clips (actor 1002, mp3)."""
    clips = sorted(CLIPS.glob("1002_*.mp3"))
    assert len(clips) == 6
    return clips


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: the real corpora. Missing data fails the run, it is never skipped."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.fail(f"{SHARED_DATA} is missing: the real corpora must sit beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def decoded_clips(av_clips):
    """(path, 16 kHz audio, [(t_ms, BGR frame)]) for each real AV clip, decoded once."""
    from emosdk.capture.media import read_media

    return [(p, *read_media(p)) for p in av_clips]
