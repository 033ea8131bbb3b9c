"""emosdk-export: the --help texts, quantize and validate on a copy of the fixture bundle, the
checkpoint export that moved to the repository (python -m train.export_bundle, tested in
tests/train/test_export_bundle.py), and engine without TensorRT."""

from __future__ import annotations

import json
import shutil

import pytest

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
    for cmd in ("validate", "quantize", "engine"):
        assert cmd in text
    assert " onnx " not in text  # moved to the repository (see the epilog)
    assert "python -m train.export_bundle CHECKPOINT_DIR --out BUNDLE" in text


@pytest.mark.parametrize(
    "cmd, flags",
    [
        (
            "validate",
            ["--tolerance", "--json", "--batches", "--windows", "python -m train.export_bundle"],
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


def test_remove_variant_takes_a_graph_out_and_keeps_what_is_still_used(bundle, capsys):
    assert main(["quantize", str(bundle), "--roles", "fusion", "face_encoder"]) == 0
    capsys.readouterr()
    assert main(["remove-variant", str(bundle), "int8", "fusion"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "removed": "int8/fusion",
        "deleted": "fusion.int8.onnx",
    }
    meta = load_bundle(bundle).meta  # re-hashed and verified
    assert meta["variants"]["int8"] == {"face_encoder": "face_encoder.int8.onnx"}
    assert "fusion.int8.onnx" not in meta["files"] and not (bundle / "fusion.int8.onnx").exists()
    # a variant entry that names a default graph (the default bundle's int8 audio encoder):
    # the entry goes, the file stays
    edit = json.loads((bundle / "model.json").read_text())
    edit["variants"]["int8"]["audio_encoder"] = edit["graphs"]["audio_encoder"]["file"]
    (bundle / "model.json").write_text(json.dumps(edit))
    assert main(["remove-variant", str(bundle), "int8", "audio_encoder"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] is None
    assert (bundle / edit["graphs"]["audio_encoder"]["file"]).is_file()
    assert main(["remove-variant", str(bundle), "int8", "face_encoder"]) == 0
    assert "variants" not in load_bundle(bundle).meta or not load_bundle(bundle).meta["variants"]
    capsys.readouterr()
    assert main(["remove-variant", str(bundle), "int8", "fusion"]) == 2
    assert "no variant 'int8' for 'fusion'" in capsys.readouterr().err


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


def test_onnx_moved_to_the_repository_and_says_where(capsys):
    assert main(["onnx", "ckpt", "--out", "bundle"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emosdk-export onnx: error: moved:")
    assert "python -m train.export_bundle CHECKPOINT_DIR --out BUNDLE" in err
    with pytest.raises(SystemExit) as e:  # comparing with checkpoints moved there too
        main(["validate", "bundle", "--checkpoints", "ckpt"])
    assert e.value.code == 2
