"""Smoke run of train/train_face.py on real FER2013 faces: one step, then the summary."""

from __future__ import annotations

import json

from train.data import DATA_ROOT as DATA
from train.train_face import main


def test_train_face_smoke(tmp_path):
    assert (DATA / "fer2013" / "manifest.csv").is_file(), f"FER2013 missing in {DATA}"
    out = tmp_path / "face"
    summary = main(
        ["--out", str(out), "--limit", "8", "--max-steps", "1", "--threads", "1",
         "--cache-dir", "", "--widths", "8,8,16,16", "--d-video", "16", "--batch", "8"]
    )  # fmt: skip
    assert summary["params"] < 5_000_000 and summary["tta"] == "flip"
    pt = summary["publictest"]
    assert pt["n"] == 7 * 8 and len(pt["confusion"]) == 7 and 0.0 <= pt["accuracy"] <= 1.0
    assert json.loads((out / "summary.json").read_text())["publictest"] == pt
    assert (out / "face.pt").is_file() and (out / "face_last.pt").is_file()
    # resumable: a second call loads the finished stage instead of training again
    again = main(
        ["--out", str(out), "--limit", "8", "--max-steps", "1", "--threads", "1",
         "--cache-dir", "", "--widths", "8,8,16,16", "--d-video", "16", "--batch", "8"]
    )  # fmt: skip
    assert again["publictest"] == pt
