"""Smoke run of train/train_seed.py: one step per stage on a handful of real clips and faces.

Reads the real corpora from ../shared/data (or $EMOSDK_DATA) and fails if they are missing:
the point is to exercise the real loaders, front-ends, export and bundle writing end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from train.data import DATA_ROOT as DATA  # ../shared/data beside the checkout, or $EMOSDK_DATA

ROOT = Path(__file__).resolve().parents[2]


def test_train_seed_smoke(tmp_path: Path) -> None:
    assert (DATA / "cremad" / "labels" / "partition_1.csv").is_file(), f"CREMA-D missing in {DATA}"
    assert (DATA / "fer2013" / "manifest.csv").is_file(), f"FER2013 missing in {DATA}"
    out, bundle = tmp_path / "run", tmp_path / "bundle"
    cmd = [
        sys.executable, "-m", "train.train_seed",
        "--out", str(out), "--bundle-out", str(bundle), "--data-root", str(DATA),
        "--cache-dir", "", "--limit", "6", "--max-steps", "1",
        "--face-batch", "8", "--audio-batch", "4", "--fusion-batch", "4",
        "--d-audio", "32", "--d-video", "32", "--d-model", "32", "--fusion-heads", "2",
        "--audio-layers", "1", "--audio-heads", "2", "--face-widths", "8,16,16,32",
        "--audio-crops", "1", "--face-jitters", "2",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]

    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    stages = {r["stage"] for r in records}
    assert {"data", "face", "audio", "pairs", "fusion", "done", "bundle"} <= stages
    synthetic = [
        r for r in records if r["stage"] == "pairs" or "final" in r and r["stage"] == "fusion"
    ]
    assert len(synthetic) == 2 and all(r["note"] == "synthetic pairs" for r in synthetic)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["fusion_synthetic_pairs"]) >= {
        "synthetic_test_av_macro_f1",
        "synthetic_test_audio_only_macro_f1",
        "synthetic_test_video_only_macro_f1",
    }

    from emosdk.models.bundle import load_bundle

    b = load_bundle(bundle)
    assert b.labels == ("anger", "disgust", "fear", "happiness", "neutral", "sadness")
    assert b.meta["data_card"]["fusion"]["synthetic_pairing"] is True
    for name, m in b.meta["metrics"].items():
        assert "command" in m and "value" in m, name
        if name.startswith("synthetic"):
            assert "SYNTHETIC" in m["note"]
    for stage in ("face", "audio", "fusion"):  # resumable: final and per-epoch checkpoints
        assert (out / f"{stage}.pt").is_file() and (out / f"{stage}_last.pt").is_file()
