"""emosdk-bench on the fixture bundle and the real clips: documented JSON, statuses, floors."""

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from emosdk.bench import check_floors, main
from emosdk.errors import InputError
from emosdk.evaluation import default_clips_manifest, read_manifest
from emosdk.metrics import classification_report

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "sdk" / "emosdk" / "bench_schema.json").read_text()
)
LABELS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness")


def run_json(capsys, argv):
    code = main([*argv, "--json"])
    out = json.loads(capsys.readouterr().out)
    jsonschema.validate(out, SCHEMA)
    return code, out


def test_default_table_json_validates_and_fp16_is_unavailable_here(fixture_bundle, capsys):
    code, out = run_json(capsys, ["--model", str(fixture_bundle), "--runs", "3"])
    assert code == 0
    rows = {(r["backend"], r["precision"]): r for r in out["rows"]}
    assert rows[("onnxruntime", "fp32")]["status"] == "ok"
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        fp16 = rows[("onnxruntime", "fp16")]
        assert fp16["status"] == "unavailable" and "GPU" in fp16["reason"]
    assert "int8" in rows[("onnxruntime", "int8")]["reason"]
    fp32 = rows[("onnxruntime", "fp32")]
    assert fp32["n"] == 12  # the six AV clips and the six audio clips bundled in tests/data
    assert fp32["details"]["accuracy"]["conditions"]["av"]["n"] == 6


def test_engine_fp16_reports_the_row_and_still_exits_zero_if_anything_ran(fixture_bundle, capsys):
    import onnxruntime as ort

    code = main(["--model", str(fixture_bundle), "--engine", "fp16", "--runs", "2"])
    out = capsys.readouterr().out
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        assert "❌ onnxruntime fp16" in out and "needs an NVIDIA GPU" in out
        assert "❌ tensorrt fp16" in out
    assert "✅ onnxruntime fp32" in out  # the reference row still runs
    assert code == 0 and "Legend" in out


def test_the_table_is_printed(fixture_bundle, capsys):
    assert main(["--model", str(fixture_bundle), "--engine", "fp32", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "✅ onnxruntime fp32" in out and "Size MB" in out and "win/s" in out


def test_accuracy_subcommand_with_plots(fixture_bundle, tmp_path, capsys):
    code, out = run_json(
        capsys,
        [
            "accuracy",
            "--manifest",
            str(default_clips_manifest()),
            "--model",
            str(fixture_bundle),
            "--plots",
            str(tmp_path),
        ],
    )
    assert code == 0 and out["n"] == 12 and out["skipped"]["total"] == 0
    assert len(out["robustness"]) == 9 and out["robustness"][0]["masked"] == 0.1
    assert set(out["conditions"]) == {"av", "audio", "video"}
    assert np.sum(out["confusion"]) == 12
    import cv2

    for name in ("confusion.png", "robustness.png"):
        img = cv2.imread(str(tmp_path / name))
        assert img is not None and img.std() > 10  # something was drawn


def test_accuracy_on_face_images_and_audio_only(fixture_bundle, tmp_path, capsys, shared_data):
    import csv

    fer = shared_data / "fer2013"
    rows = list(csv.DictReader(open(fer / "manifest.csv")))
    pick = [r for r in rows if r["usage"] == "PublicTest"][:20]
    man = tmp_path / "faces.csv"
    with open(man, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        for r in pick:
            w.writerow([str(fer / r["file"]), r["label"]])
    code, out = run_json(
        capsys, ["accuracy", "--manifest", str(man), "--model", str(fixture_bundle)]
    )
    skipped = sum(r["label"] not in LABELS for r in pick)
    assert out["n"] == 20 - skipped and out["skipped"]["total"] == skipped
    code, out = run_json(
        capsys,
        [
            "accuracy",
            "--manifest",
            str(default_clips_manifest()),
            "--model",
            str(fixture_bundle),
            "--modality",
            "audio",
        ],
    )
    assert out["n"] == 12 and out["conditions"] == {}


def test_latency_subcommand(fixture_bundle, capsys):
    code, out = run_json(
        capsys, ["latency", "--model", str(fixture_bundle), "--runs", "4", "--batch", "1", "4"]
    )
    assert code == 0 and set(out["throughput"]) == {"1", "4"}
    for stage in (
        "audio_frontend",
        "audio_encoder",
        "face_detect",
        "face_encoder",
        "fusion",
        "total",
    ):
        assert stage in out["warm_ms"], stage
        assert out["warm_ms"][stage]["n"] >= 1
    assert out["environment"]["cpu_count"] >= 1


def test_floor_gate(fixture_bundle, capsys):
    code = main(
        [
            "accuracy",
            "--manifest",
            str(default_clips_manifest()),
            "--model",
            str(fixture_bundle),
            "--floor",
            "accuracy=1.01",
        ]
    )
    assert code == 1 and "floor failed" in capsys.readouterr().err
    assert check_floors(["macro_f1=0.5"], {"macro_f1": 0.6}) == []
    with pytest.raises(InputError, match="METRIC=VALUE"):
        check_floors(["macro_f1"], {"macro_f1": 0.6})
    with pytest.raises(InputError, match="unknown metric"):
        check_floors(["speed=1"], {"macro_f1": 0.6})


def test_manifest_errors_and_label_mapping(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,emotion\nx.wav,angry\n")
    with pytest.raises(InputError, match="file,label"):
        read_manifest(bad, LABELS)
    good = tmp_path / "good.csv"
    good.write_text("file,label\na.wav,angry\nb.wav,surprise\nc.wav,calm\nd.wav,Happy\n")
    rows, skipped = read_manifest(good, LABELS)
    assert [lab for _, lab in rows] == ["anger", "happiness"]
    assert skipped == {"surprise": 1, "calm": 1}
    assert rows[0][0] == tmp_path / "a.wav"


def test_metrics_match_hand_counts():
    rep = classification_report([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert rep["accuracy"] == pytest.approx(3 / 5) == rep["micro_f1"]
    # F1: a = 2*(1/2*1/2)/(1) = 0.5, b = 2*(2/3*1)/(5/3) = 0.8, c = 0
    assert rep["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert rep["uar"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert rep["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_backend_torch_is_an_unavailable_row_not_a_crash(fixture_bundle, capsys):
    code, out = run_json(
        capsys, ["--model", str(fixture_bundle), "--backend", "torch", "--runs", "2"]
    )
    rows = {(r["backend"], r["precision"]): r for r in out["rows"]}
    assert rows[("torch", "fp32")]["status"] == "unavailable"
    assert "compare_backends" in rows[("torch", "fp32")]["reason"]
    assert rows[("onnxruntime", "fp32")]["status"] == "ok" and code == 0


def test_accuracy_progress_on_stderr_with_the_real_clips(fixture_bundle, capsys):
    manifest = str(default_clips_manifest())
    base = ["accuracy", "--model", str(fixture_bundle), "--manifest", manifest]
    assert main([*base, "--progress"]) == 0
    err = capsys.readouterr().err
    assert "decoding 0/12 files" in err and "scoring 12/12 files (100%)" in err
    assert "/s" in err
    assert main([*base, "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main(base) == 0  # stderr is not a terminal here: no progress by default
    assert capsys.readouterr().err == ""


def test_cpu_details_name_the_int8_features() -> None:
    from emosdk.evaluation import cpu_details

    x86 = (
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC\nstepping\t: 1\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n\n"
        "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
    )
    d = cpu_details(x86)
    assert d == {
        "model_name": "AMD EPYC",
        "id": "cpu family 25, model 17, stepping 1",
        "isa": ["avx2", "avx512f", "avx512_vnni"],
    }
    arm = "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nCPU implementer\t: 0x41\n"
    arm += "CPU part\t: 0xd42\n"
    d = cpu_details(arm)
    assert d["isa"] == ["asimddp", "i8mm"] and d["id"] == "CPU implementer 0x41, CPU part 0xd42"
    assert cpu_details("")["isa"] == []  # no /proc/cpuinfo: nothing claimed
