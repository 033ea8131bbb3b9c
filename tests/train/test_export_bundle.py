"""python -m train.export_bundle: a small train_seed checkpoint folder -> a validated bundle with
its opset-18 variant, the same bundle checked against the checkpoints, and the errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from emosdk.models.bundle import load_bundle  # noqa: E402
from train import FER_CLASSES, LABELS  # noqa: E402
from train.export_bundle import main  # noqa: E402
from train.models import AudioEncoder, AuxFormerDeploy, FaceEncoder  # noqa: E402


@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    """A train_seed --out folder of small random modules (config.json + the three states)."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    cfg = dict(
        d_video=16,
        face_widths="8,16,16,16",
        d_audio=16,
        audio_layers=1,
        audio_heads=1,
        d_model=32,
        fusion_heads=2,
        fusion_cross=1,
        fusion_mem=1,
        name="ckpt",
        version="1",
    )
    torch.manual_seed(0)
    mods = {
        "face": FaceEncoder(d_video=16, widths=(8, 16, 16, 16), n_classes=len(FER_CLASSES)),
        "audio": AudioEncoder(n_mels=64, d_audio=16, n_layers=1, n_heads=1, n_classes=len(LABELS)),
        "fusion": AuxFormerDeploy(
            16, 16, n_classes=len(LABELS), d_model=32, n_heads=2, n_cross=1, n_mem=1
        ),
    }
    (ckpt / "config.json").write_text(json.dumps(cfg))
    for name, m in mods.items():
        torch.save({"model": m.state_dict(), "metrics": {}}, ckpt / f"{name}.pt")
    return ckpt


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
def test_export_then_check(checkpoints, tmp_path, capsys, one_thread):
    out = tmp_path / "bundle"
    grid = ["--batches", "1", "8", "--windows", "1", "6"]
    assert main([str(checkpoints), "--out", str(out), *grid]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    b = load_bundle(out)
    assert b.name == "ckpt" and b.version == "1"
    assert b.meta["variants"]["opset18"]["fusion"] == "fusion.opset18.onnx"
    export = b.meta["export"]
    assert export["fusion"]["opset"] == 23 and export["fusion.opset18"]["opset"] == 18
    assert export["validation"]["command"].startswith("python -m train.export_bundle ")
    for graphs in (export["validation"]["graphs"], export["validation"]["opset18"]):
        assert set(graphs) == {"audio_encoder", "face_encoder", "fusion"}
        for role, rep in graphs.items():
            assert max(rep["max_abs_diff"].values()) <= 1e-4, role

    report = tmp_path / "check.json"
    argv = [str(checkpoints), "--check", str(out), *grid, "--json", str(report)]
    assert main(argv) == 0
    checked = json.loads(report.read_text())
    assert json.loads(capsys.readouterr().out) == checked
    assert set(checked) == {"fp32", "opset18"}
    for variant in checked.values():
        for role, rep in variant.items():
            assert max(rep["max_abs_diff"].values()) <= 1e-4, role


def test_a_folder_without_checkpoints_exits_2_naming_the_files(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("train.export_bundle: error:")
    assert "missing ['config.json', 'face.pt', 'audio.pt', 'fusion.pt']" in err
    assert "python -m train.train_seed" in err


def test_out_or_check_is_required(capsys):
    with pytest.raises(SystemExit) as e:
        main(["ckpt"])
    assert e.value.code == 2
    assert "one of the arguments --out --check is required" in capsys.readouterr().err
