"""emosdk-export: the --help texts, quantize and validate on a copy of the fixture bundle, onnx from
a small checkpoint folder, and engine without TensorRT."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from emosdk.export.cli import build_parser, main
from emosdk.models.bundle import load_bundle


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


@pytest.fixture
def bundle(fixture_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(fixture_bundle, dst)
    return dst


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_top_level_help_lists_the_subcommands(capsys):
    text = _help(capsys)
    assert text.startswith("usage: emosdk-export")
    for cmd in ("onnx", "validate", "quantize", "engine"):
        assert cmd in text


@pytest.mark.parametrize(
    "cmd, flags",
    [
        (
            "onnx",
            [
                "--out",
                "--opset",
                "{18,23}",
                "--external-data",
                "--no-tensorrt-graphs",
                "--media",
                "--batches",
                "--windows",
                "opset18",
                "train_seed",
            ],
        ),
        (
            "validate",
            ["--checkpoints", "--tolerance", "--media", "--json", "--batches", "--windows"],
        ),
        ("quantize", ["--manifest", "--force", "--max-drop", "--roles", "--op-types", "macro-F1"]),
        (
            "engine",
            [
                "--precision",
                "{fp32,fp16,int8}",
                "--windows",
                "--batch MIN OPT MAX",
                "--workspace-mb",
                "--cache-dir",
                "--dla-core",
                "--roles",
                "EMOSDK_ENGINE_CACHE",
                "JetPack",
            ],
        ),
    ],
)
def test_subcommand_help_names_its_key_flags(capsys, cmd, flags):
    text = _help(capsys, cmd)
    assert text.startswith(f"usage: emosdk-export {cmd}")
    for flag in flags:
        assert flag in text, (cmd, flag)


def test_defaults_cover_batches_1_to_8_and_windows_1_to_6():
    args = build_parser().parse_args(["validate", "x"])
    assert args.batches == list(range(1, 9))
    assert args.windows == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    args = build_parser().parse_args(["engine", "x"])
    assert args.precision == ["fp16"] and args.batch == [1, 1, 8]


def test_quantize_adds_the_int8_variant(bundle, capsys):
    assert main(["quantize", str(bundle), "--roles", "fusion"]) == 0
    assert json.loads(capsys.readouterr().out) == {"int8": {"fusion": "fusion.int8.onnx"}}
    meta = load_bundle(bundle).meta  # hashes verified
    assert meta["variants"]["int8"] == {"fusion": "fusion.int8.onnx"}
    assert "fusion.int8.onnx" in meta["files"]


def test_quantize_on_a_missing_bundle_exits_2(tmp_path, capsys):
    assert main(["quantize", str(tmp_path / "nope")]) == 2
    assert "model.json not found" in capsys.readouterr().err


def test_validate_self_checks_a_bundle(bundle, capsys, tmp_path):
    out = tmp_path / "report.json"
    assert (
        main(
            [
                "validate",
                str(bundle),
                "--batches",
                "1",
                "3",
                "--windows",
                "1",
                "6",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert set(report) == {"fp32"}
    for role in ("audio_encoder", "face_encoder", "fusion"):
        check = report["fp32"]["self_check"][role]
        assert check["checks"] >= 3
        assert check["batch_consistency_max_abs_diff"] <= 1e-4


@pytest.mark.skipif(_tensorrt_importable(), reason="tensorrt imports here")
def test_engine_without_tensorrt_exits_2_with_the_install_hint(bundle, capsys, tmp_path):
    rc = main(["engine", str(bundle), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "emosdk-export engine: error:" in err
    assert "JetPack" in err and "tensorrt-cu12" in err


@pytest.mark.slow
def test_onnx_from_a_checkpoint_folder(tmp_path, capsys):
    from train import FER_CLASSES, LABELS
    from train.models import AudioEncoder, AuxFormerDeploy, FaceEncoder

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
    out = tmp_path / "bundle"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = main(
            ["onnx", str(ckpt), "--out", str(out), "--batches", "1", "8", "--windows", "1", "6"]
        )
    finally:
        torch.set_num_threads(n)
    assert rc == 0, capsys.readouterr().err
    b = load_bundle(out)
    assert b.name == "ckpt" and b.version == "1"
    assert b.meta["variants"]["opset18"]["fusion"] == "fusion.opset18.onnx"
    export = b.meta["export"]
    assert export["fusion"]["opset"] == 23 and export["fusion.opset18"]["opset"] == 18
    for graphs in (export["validation"]["graphs"], export["validation"]["opset18"]):
        for role, rep in graphs.items():
            assert max(rep["max_abs_diff"].values()) <= 1e-4, role
    assert main(["onnx", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "missing ['config.json'" in capsys.readouterr().err
