"""benchmarks/attention_bench.py: shapes of the fusion model; no GPU -> a message, no file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import attention_bench  # noqa: E402


def test_window_lengths_match_the_fusion_model():
    assert [attention_bench.lengths(s) for s in (1, 3, 6)] == [(24, 5), (74, 15), (149, 30)]
    assert attention_bench.kinds(3) == {
        "audio_self": (75, 75),
        "video_self": (16, 16),
        "audio_to_video": (75, 16),
        "video_to_audio": (16, 75),
    }


def test_without_a_gpu_it_says_so_and_writes_nothing(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the benchmark would run")
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "attention_bench.py"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "no CUDA GPU" in r.stderr and "Nothing written" in r.stderr
    assert not out.exists()
