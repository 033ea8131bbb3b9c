"""tools/gpu_check.py, the one-command GPU check: its CPU-side parts, run for real here (argument
parsing, what it detects, the install plan, step outcomes, the JSON summary). Its GPU steps run
on an NVIDIA machine; here they must be skipped with the reason."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod
    spec.loader.exec_module(mod)
    return mod


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


def test_arguments(gc, tmp_path):
    a = gc.parse_args(["--out", str(tmp_path), "--steps", "bench_fp16,build"])
    assert a.steps == ["detect", "build", "bench_fp16"]  # detect first, then the fixed order
    assert gc.parse_args([]).steps == list(gc.STEPS)
    r = _run("--steps", "build,warp_drive")
    assert r.returncode == 2 and "unknown steps ['warp_drive']" in r.stderr
    r = _run("--wheels", str(tmp_path / "none"))
    assert r.returncode == 2 and "not a folder" in r.stderr
    assert "compute-sanitizer" in _run("--help").stdout


def test_nvidia_smi_rows_and_architecture(gc):
    text = "NVIDIA H200, 580.159.04, 9.0, 143771 MiB\nOrin (nvgpu), 540.4.0, 8.7, 7620 MiB\n"
    gpus = gc.parse_nvidia_smi(text)
    assert gpus[0] == {
        "name": "NVIDIA H200",
        "driver": "580.159.04",
        "compute_cap": "9.0",
        "memory": "143771 MiB",
    }
    assert gc.cuda_arch(gpus) == "90" and gc.cuda_arch(gpus[1:]) == "87"
    assert gc.parse_nvidia_smi("") == [] and gc.cuda_arch([]) is None


def test_install_plan_adds_only_what_is_missing(gc, tmp_path):
    site = tmp_path / "site"
    gpu = {"name": "NVIDIA H200", "compute_cap": "9.0"}
    bare = {"gpus": [gpu], "packages": {"onnxruntime_providers": ["CPUExecutionProvider"]}}
    plan = gc.install_plan(bare, site, None)
    assert plan[0][-3:] == ["--no-build-isolation", "-e", str(REPO)]  # emosdk, offline-safe
    assert plan[1][-5:] == ["--target", str(site), gc.ORT_GPU, "av", "soundfile"]
    ready = {
        "gpus": [gpu],
        "packages": {
            "emosdk": True,
            "av": True,
            "soundfile": True,
            "onnxruntime_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        },
    }
    assert gc.install_plan(ready, site, None) == []
    offline = gc.install_plan({**bare, "gpus": []}, site, tmp_path)
    assert all(["--no-index", "--find-links", str(tmp_path)] == c[6:9] for c in offline)
    assert not any(gc.ORT_GPU in c for c in offline)  # no GPU: no onnxruntime-gpu


def test_step_outcomes_from_real_commands(gc, tmp_path):
    log = gc.Log(tmp_path / "log")
    ok, bad, slow = gc.Step("ok"), gc.Step("bad"), gc.Step("slow")
    gc.run_cmd(ok, [sys.executable, "-c", "print('hello')"], log, timeout=60)
    gc.run_cmd(bad, [sys.executable, "-c", "import sys; sys.exit(3)"], log, timeout=60)
    gc.run_cmd(slow, [sys.executable, "-c", "import time; time.sleep(30)"], log, timeout=1)
    assert (ok.status, ok.returncode, ok.output_tail.strip()) == ("passed", 0, "hello")
    assert (bad.status, bad.reason) == ("failed", "exit code 3")
    assert (slow.status, slow.reason) == ("failed", "timed out after 1 s")
    text = (tmp_path / "log").read_text()
    assert "===== ok:" in text and "hello" in text and "(timed out)" in text
    missing = gc.Step("missing")
    gc.run_cmd(missing, [str(tmp_path / "no-such-program")], log, timeout=5)
    assert missing.status == "failed" and "cannot run" in missing.reason


def test_junit_and_sanitizer_parsing(gc, tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite tests="7" failures="1" errors="0" skipped="2"/></testsuites>'
    )
    assert gc.junit_counts(xml) == {"tests": 7, "failures": 1, "errors": 0, "skipped": 2}
    assert gc.sanitizer_errors("========= ERROR SUMMARY: 0 errors") == 0
    assert gc.sanitizer_errors("========= ERROR SUMMARY: 12 errors") == 12
    assert gc.sanitizer_errors("no summary") is None


def test_a_run_without_a_gpu_writes_the_summary_and_skips_with_reasons(gc, tmp_path):
    """The real script, as on a GPU machine, on this one: the kernels compile, every GPU step is
    skipped with its reason, and the JSON says what was verified where."""
    probe = gc.detect()
    if probe["gpus"]:
        pytest.skip("an NVIDIA GPU is here: the full check runs instead (tools/gpu_check.py)")
    out = tmp_path / "out"
    r = _run("--out", str(out), "--no-install", "--steps", "build,kernel_tests,bench_fp16")
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((out / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == ["detect", "build", "kernel_tests", "bench_fp16"]
    assert summary["gpu"] is None and summary["machine"]["gpus"] == []
    assert "onnxruntime_providers" in summary["machine"]["packages"]
    for name in ("kernel_tests", "bench_fp16"):
        assert steps[name]["status"] == "skipped" and "no NVIDIA GPU" in steps[name]["reason"]
    if probe["nvcc"]:
        assert steps["build"]["status"] == "passed"
        assert "sanitize_attention" in steps["build"]["detail"]["built"]
    else:
        assert steps["build"]["status"] == "skipped"
    assert summary["failed"] == [] and (out / "gpu_check.log").is_file()
    r = _run("--out", str(out), "--no-install", "--steps", "detect", "--require-gpu")
    assert r.returncode == 2 and "no NVIDIA GPU found" in r.stderr
    assert json.loads((out / "gpu_check.json").read_text())["steps"][0]["name"] == "detect"


@pytest.mark.slow
def test_bench_fp16_step_end_to_end_says_why_fp16_did_not_run_here(gc, tmp_path):
    """The bench_fp16 step as on a GPU machine (the GPU only claimed): it makes the fp16 variant
    on a copy of the default bundle when the bundle has none, runs emosdk-bench --engine fp16 on
    ONNX Runtime and reads its JSON. Without a CUDA provider here the fp16 row cannot run, and
    the step fails with emosdk's own reason instead of passing on the CPU."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("ONNX Runtime's CUDA provider is here: the step would really pass")
    args = gc.parse_args(["--out", str(tmp_path), "--no-install", "--steps", "bench_fp16"])
    check = gc.Check(args, tmp_path)
    check.machine = {"gpus": [{"name": "claimed", "compute_cap": "9.0"}], "packages": {}}
    (step,) = check.run(["bench_fp16"])
    assert step.status == "failed", step
    assert "fp16 did not run" in step.reason and "onnxruntime-gpu" in step.reason
    rows = step.detail["bench"]["rows"]
    assert {(r["backend"], r["precision"]) for r in rows} >= {("onnxruntime", "fp16")}
    bundled = json.loads((REPO / "sdk/emosdk/models/bundled/default/model.json").read_text())
    if "fp16" not in bundled.get("variants", {}):
        assert step.detail["fp16_variant"].startswith("made for this check")
