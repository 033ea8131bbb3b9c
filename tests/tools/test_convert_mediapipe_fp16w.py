"""tools/convert_mediapipe.py fp16w: the landmark and blendshape graphs with float16-stored
weights (how bundle v2 ships them) give bit-identical tracking on the real sample clips, and the
perception card it writes names the new files' hashes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "convert_mediapipe.py"
DEFAULT = REPO / "sdk" / "emosdk" / "models" / "bundled" / "default"


def test_fp16_weights_are_lossless_on_real_frames(tmp_path: Path) -> None:
    import shutil

    from emosdk.export.quantize import float32_weights
    from emosdk.models.bundle import sha256_file

    src = tmp_path / "fp32"
    src.mkdir()
    shutil.copyfile(DEFAULT / "face_detector.onnx", src / "face_detector.onnx")
    for name in ("face_landmarks.onnx", "face_blendshapes.onnx"):
        float32_weights(DEFAULT / name, src / name)  # the default ships them float16-stored

    card_in = tmp_path / "card_in.json"
    card_in.write_text(
        json.dumps({"files": {}, "model_card": {"face_perception": {"conversion": "converted."}}})
    )
    out = tmp_path / "fp16w"
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "fp16w", "--onnx", str(src), "--out", str(out),
         "--card", str(card_in)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["real_frames"]["faces"] >= 20  # the six clips, every 15th frame
    assert report["real_frames"]["max_abs_diff"] == {
        "landmarks": 0.0,
        "presence": 0.0,
        "blendshapes": 0.0,
    }
    for name in ("face_landmarks", "face_blendshapes"):
        assert report[name]["max_weight_roundtrip_error"] == 0.0
        assert report[name]["bytes_after"] < 0.6 * report[name]["bytes_before"]
    card = json.loads((out / "card.json").read_text())
    for f in ("face_detector.onnx", "face_landmarks.onnx", "face_blendshapes.onnx"):
        assert card["files"][f] == sha256_file(out / f)
    assert "float16" in card["model_card"]["face_perception"]["conversion"]
