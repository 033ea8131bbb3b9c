#!/usr/bin/env python3
"""One GPU check of emosdk's GPU path, for the first NVIDIA GPU at hand; one JSON summary.

Steps, in order (``--steps`` picks some; each records passed / failed / skipped with the reason,
its command, its time and the end of its output):

``detect``
    what is here: GPUs (nvidia-smi: name, driver, compute capability), nvcc, compute-sanitizer,
    Python packages (torch and whether it sees CUDA, triton, cupy, cuda-python, tensorrt,
    onnxruntime and its providers).
``install``
    what the later steps need and the machine lacks, without touching its own packages: emosdk
    itself (``pip install --no-deps --no-build-isolation -e .``, works offline), and into a
    separate folder put first on PYTHONPATH for the ONNX Runtime step only:
    ``onnxruntime-gpu[cuda,cudnn]`` (its CUDA and cuDNN libraries come from the package index)
    and the media decoders the bundled clips need (``av``, ``soundfile``). ``--wheels DIR``
    installs from a folder of wheels instead of the index (machines without a network).
``build``
    ``tools/build_kernels.sh`` for this GPU's architecture into ``build/gpu_check``: the kernel
    library, the TensorRT plugin (with TensorRT's headers), ``sanitize_attention`` and the
    plugin's build-time test.
``kernel_tests``
    ``pytest tests/kernels`` with that build: the CUDA and Triton kernels against the float64
    reference (tests/kernels/test_attention_gpu.py), the plugin's build-time test, the rest.
``memcheck``, ``racecheck``
    ``compute-sanitizer`` on ``sanitize_attention`` (the kernel through its C ABI on odd sizes,
    broadcast and all-masked rows, against a float64 reference).
``attention_bench``
    ``benchmarks/attention_bench.py --quick``; its JSON is embedded in the summary.
``bench_fp16``
    ``emosdk-bench --engine fp16 --backend onnxruntime`` on the bundled model and clips; passes
    only when the fp16 graphs ran on ONNX Runtime's CUDA provider.
``tensorrt_tests``
    ``pytest tests/export/test_tensorrt.py`` (engines built and compared with ONNX Runtime) where
    ``import tensorrt`` works; skipped with the import error elsewhere.

Without a GPU the GPU steps are skipped with that reason (``--require-gpu`` makes it exit 2), so
the script's own logic is tested on any machine (tests/tools/test_gpu_check.py). Writes
``gpu_check.json`` and ``gpu_check.log`` (every step's full output) into ``--out`` (default
``$OUT``, else ``build/gpu_check_out``). Exit: 0 when no step failed, 1 when one did.

    python3 tools/gpu_check.py --out /tmp/gpu_check               # a GPU machine with PyPI
    python3 tools/gpu_check.py --wheels .whl --out "$OUT"         # offline, wheels carried
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STEPS = (
    "detect",
    "install",
    "build",
    "kernel_tests",
    "memcheck",
    "racecheck",
    "attention_bench",
    "bench_fp16",
    "tensorrt_tests",
)
TIMEOUTS_S = {
    "install": 300,
    "build": 300,
    "kernel_tests": 300,
    "memcheck": 180,
    "racecheck": 180,
    "attention_bench": 240,
    "bench_fp16": 300,
    "tensorrt_tests": 600,
}
"""Per-step limits (``--timeout-scale`` multiplies them). A GPU lent for minutes runs the
whole check in about five."""
ORT_GPU = "onnxruntime-gpu[cuda,cudnn]"
TAIL = 3000


@dataclass
class Step:
    """One step's outcome, as written into the summary."""

    name: str
    status: str = "skipped"  # passed | failed | skipped
    reason: str = ""
    seconds: float = 0.0
    command: list[str] | None = None
    returncode: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    output_tail: str = ""


class Log:
    """Every command's full output, appended to one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("", encoding="utf-8")

    def write(self, title: str, text: str) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(f"\n===== {title} =====\n{text}\n")


def run_cmd(
    step: Step,
    cmd: list[str],
    log: Log,
    timeout: float,
    env: dict[str, str] | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> subprocess.CompletedProcess | None:
    """Run ``cmd`` for ``step``: fills its command, return code, status and output tail."""
    step.command = [str(c) for c in cmd]
    t0 = time.monotonic()
    try:
        r = subprocess.run(
            step.command,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout or ""
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        step.status, step.reason = "failed", f"timed out after {timeout:.0f} s"
        step.seconds = round(time.monotonic() - t0, 1)
        log.write(f"{step.name}: {' '.join(step.command)} (timed out)", out)
        step.output_tail = out[-TAIL:]
        return None
    except OSError as e:
        step.status, step.reason = "failed", f"cannot run {cmd[0]}: {e}"
        return None
    step.seconds = round(step.seconds + time.monotonic() - t0, 1)
    text = r.stdout + r.stderr
    log.write(f"{step.name}: {' '.join(step.command)} -> {r.returncode}", text)
    step.returncode = r.returncode
    step.output_tail = text[-TAIL:]
    if r.returncode in ok_codes:
        step.status = "passed"
    else:
        step.status, step.reason = "failed", f"exit code {r.returncode}"
    return r


# -- detection -----------------------------------------------------------------------------------


def parse_nvidia_smi(text: str) -> list[dict[str, str]]:
    """Rows of ``nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total
    --format=csv,noheader``."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4 and parts[0]:
            gpus.append(
                {"name": parts[0], "driver": parts[1], "compute_cap": parts[2], "memory": parts[3]}
            )
    return gpus


def cuda_arch(gpus: list[dict[str, str]]) -> str | None:
    """CMAKE_CUDA_ARCHITECTURES of the first GPU ("9.0" -> "90")."""
    if not gpus:
        return None
    m = re.fullmatch(r"(\d+)\.(\d+)", gpus[0].get("compute_cap", ""))
    return f"{m.group(1)}{m.group(2)}" if m else None


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    cuda = Path("/usr/local/cuda/bin") / name
    return found or (str(cuda) if cuda.exists() else None)


PROBE = r"""
import importlib.util, json
out = {}
for m in ("torch", "triton", "cupy", "tensorrt", "onnxruntime", "av", "soundfile", "emosdk"):
    out[m] = importlib.util.find_spec(m) is not None
try:
    import onnxruntime as ort
    out["onnxruntime_version"] = ort.__version__
    out["onnxruntime_providers"] = ort.get_available_providers()
except Exception as e:
    out["onnxruntime_error"] = f"{type(e).__name__}: {e}"
try:
    import tensorrt
    out["tensorrt_version"] = tensorrt.__version__
except Exception as e:
    out["tensorrt_error"] = f"{type(e).__name__}: {e}"
try:
    from cuda.bindings import runtime
    out["cuda_python"] = "cuda.bindings"
except Exception:
    try:
        from cuda import cudart
        out["cuda_python"] = "cuda.cudart"
    except Exception as e:
        out["cuda_python"] = None
if out["torch"]:
    try:
        import torch
        out["torch_version"] = torch.__version__
        out["torch_cuda"] = bool(torch.cuda.is_available())
    except Exception as e:
        out["torch_error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def probe_python(env: dict[str, str] | None = None) -> dict[str, Any]:
    """What this Python can import (in a fresh process, so installs made since are seen)."""
    r = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": (r.stdout + r.stderr)[-TAIL:]}


def detect() -> dict[str, Any]:
    """The machine: GPUs, CUDA tools and Python packages."""
    smi = _tool("nvidia-smi")
    gpus: list[dict[str, str]] = []
    smi_error = None
    if smi:
        r = subprocess.run(
            [
                smi,
                "--query-gpu=name,driver_version,compute_cap,memory.total",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        gpus = parse_nvidia_smi(r.stdout) if r.returncode == 0 else []
        smi_error = None if r.returncode == 0 else (r.stdout + r.stderr).strip()[-500:]
    nvcc = _tool("nvcc")
    nvcc_version = None
    if nvcc:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"release ([\d.]+)", out)
        nvcc_version = m.group(1) if m else out.strip()[-100:]
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus,
        "nvidia_smi": smi,
        "nvidia_smi_error": smi_error,
        "cuda_arch": cuda_arch(gpus),
        "nvcc": nvcc,
        "nvcc_version": nvcc_version,
        "compute_sanitizer": _tool("compute-sanitizer"),
        "packages": probe_python(),
    }


# -- install ------------------------------------------------------------------------------------


def install_plan(machine: dict[str, Any], site: Path, wheels: Path | None) -> list[list[str]]:
    """The pip commands that give the later steps what this machine lacks."""
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if wheels is not None:
        pip += ["--no-index", "--find-links", str(wheels)]
    pkgs = machine.get("packages", {})
    plan = []
    if not pkgs.get("emosdk"):
        plan.append([*pip, "--no-deps", "--no-build-isolation", "-e", str(REPO)])
    extra = []
    if machine.get("gpus") and "CUDAExecutionProvider" not in pkgs.get("onnxruntime_providers", []):
        extra.append(ORT_GPU)
    extra += [m for m in ("av", "soundfile") if not pkgs.get(m)]
    if extra:
        plan.append([*pip, "--target", str(site), *extra])
    return plan


# -- the steps ----------------------------------------------------------------------------------


def junit_counts(path: Path) -> dict[str, int]:
    """tests/failures/errors/skipped of a pytest --junitxml file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    keys = ("tests", "failures", "errors", "skipped")
    return {k: sum(int(s.get(k, 0)) for s in suites) for k in keys}


def sanitizer_errors(text: str) -> int | None:
    m = re.search(r"ERROR SUMMARY: (\d+) error", text)
    return int(m.group(1)) if m else None


class Check:
    """Runs the steps and keeps their outcomes."""

    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args = args
        self.out = out
        self.tmp = Path(tempfile.mkdtemp(prefix="emosdk-gpu-check-"))
        self.site = self.tmp / "site"
        self.build = REPO / "build" / "gpu_check"
        self.log = Log(out / "gpu_check.log")
        self.machine: dict[str, Any] = {}
        self.steps: list[Step] = []

    @property
    def gpu(self) -> bool:
        return bool(self.machine.get("gpus"))

    def timeout(self, name: str) -> float:
        return TIMEOUTS_S.get(name, 300) * self.args.timeout_scale

    def env(self, site: bool = False) -> dict[str, str]:
        env = {"EMOSDK_NATIVE_DIR": str(self.build), "PYTHONUNBUFFERED": "1"}
        if site and self.site.is_dir():
            env["PYTHONPATH"] = os.pathsep.join(
                [str(self.site), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
        return env

    def need_gpu(self, step: Step) -> bool:
        if not self.gpu:
            step.reason = "no NVIDIA GPU here (nvidia-smi lists none)"
            if self.machine.get("nvidia_smi_error"):
                step.reason += f": {self.machine['nvidia_smi_error']}"
            return False
        return True

    def run(self, names: list[str]) -> list[Step]:
        for name in names:
            step = Step(name)
            t0 = time.monotonic()
            try:
                getattr(self, f"step_{name}")(step)
            except Exception as e:  # a bug in one step must not lose the others' results
                step.status, step.reason = "failed", f"{type(e).__name__}: {e}"
            step.seconds = round(max(step.seconds, time.monotonic() - t0), 1)
            self.steps.append(step)
            print(f"gpu_check: {name}: {step.status} {step.reason}".rstrip(), flush=True)
        return self.steps

    def step_detect(self, step: Step) -> None:
        self.machine = detect()
        step.status = "passed"
        step.detail = {"gpus": self.machine["gpus"], "cuda_arch": self.machine["cuda_arch"]}

    def step_install(self, step: Step) -> None:
        if self.args.no_install:
            step.reason = "--no-install"
            return
        plan = install_plan(self.machine, self.site, self.args.wheels)
        step.detail["commands"] = [" ".join(c) for c in plan]
        if not plan:
            step.status, step.reason = "passed", "nothing missing"
            return
        for cmd in plan:
            if run_cmd(step, cmd, self.log, self.timeout("install")) is None:
                return
            if step.status == "failed":
                return
        self.machine["packages_after_install"] = probe_python(self.env(site=True))

    def step_build(self, step: Step) -> None:
        if not self.machine.get("nvcc"):
            step.reason = "no CUDA compiler (nvcc) here"
            return
        arch = self.machine.get("cuda_arch") or "87"
        env = {"EMOSDK_BUILD_DIR": str(self.build), "EMOSDK_CUDA_ARCHS": arch}
        run_cmd(step, ["bash", "tools/build_kernels.sh"], self.log, self.timeout("build"), env)
        step.detail["cuda_arch"] = arch
        step.detail["built"] = sorted(p.name for p in self.build.glob("*") if p.is_file())

    def _pytest(self, step: Step, paths: list[str], name: str) -> None:
        xml = self.tmp / f"{name}.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths]
        run_cmd(step, [*cmd, f"--junitxml={xml}"], self.log, self.timeout(name), self.env())
        if xml.is_file():
            step.detail["pytest"] = junit_counts(xml)

    def step_kernel_tests(self, step: Step) -> None:
        if self.need_gpu(step):
            self._pytest(step, ["tests/kernels"], "kernel_tests")

    def _sanitizer(self, step: Step, tool: str) -> None:
        if not self.need_gpu(step):
            return
        exe = self.build / "sanitize_attention"
        sanitizer = self.machine.get("compute_sanitizer")
        if not sanitizer:
            step.reason = "compute-sanitizer is not installed"
            return
        if not exe.is_file():
            step.status, step.reason = "failed", f"{exe} was not built (see the build step)"
            return
        cmd = [sanitizer, "--tool", tool, "--error-exitcode", "3", str(exe)]
        r = run_cmd(step, cmd, self.log, self.timeout(tool))
        if r is not None:
            step.detail["errors"] = sanitizer_errors(r.stdout + r.stderr)
            if r.returncode == 77:
                step.status, step.reason = "failed", "the program saw no CUDA device"

    def step_memcheck(self, step: Step) -> None:
        self._sanitizer(step, "memcheck")

    def step_racecheck(self, step: Step) -> None:
        self._sanitizer(step, "racecheck")

    def step_attention_bench(self, step: Step) -> None:
        if not self.need_gpu(step):
            return
        out = self.tmp / "attention_bench.json"
        cmd = [sys.executable, "benchmarks/attention_bench.py", "--quick", "--out", str(out)]
        run_cmd(step, cmd, self.log, self.timeout("attention_bench"), self.env())
        if out.is_file():
            step.detail["results"] = json.loads(out.read_text())
        elif step.status == "passed":
            step.status, step.reason = "failed", "the benchmark wrote no JSON"

    def step_bench_fp16(self, step: Step) -> None:
        if not self.need_gpu(step):
            return
        model = REPO / "sdk" / "emosdk" / "models" / "bundled" / "default"
        meta = json.loads((model / "model.json").read_text())
        if "fp16" not in meta.get("variants", {}):  # make it on a copy, as a user would
            copy = self.tmp / "bundle"
            shutil.copytree(model, copy)
            cmd = [sys.executable, "-m", "emosdk.export.cli", "fp16", str(copy)]
            run_cmd(step, cmd, self.log, self.timeout("bench_fp16"), self.env(site=True))
            if step.status != "passed":
                step.reason = f"emosdk-export fp16 failed ({step.reason})"
                return
            model, step.detail["fp16_variant"] = copy, "made for this check (emosdk-export fp16)"
        else:
            step.detail["fp16_variant"] = "bundled"
        out = self.tmp / "bench_fp16.json"
        cmd = [sys.executable, "-m", "emosdk.bench", "--model", str(model), "--engine", "fp16"]
        cmd += ["--backend", "onnxruntime", "--json", "--out", str(out), "--runs", "20"]
        run_cmd(step, cmd, self.log, self.timeout("bench_fp16"), self.env(site=True))
        if not out.is_file():
            if step.status == "passed":
                step.status, step.reason = "failed", "emosdk-bench wrote no JSON"
            return
        result = json.loads(out.read_text())
        step.detail["bench"] = result
        rows = result.get("rows", result if isinstance(result, list) else [])
        fp16 = [r for r in rows if r.get("precision") == "fp16"]
        devices = {d for r in fp16 for d in r.get("device", [])}
        step.detail["devices"] = sorted(devices)
        if not fp16 or any(r.get("status") != "ok" for r in fp16):
            why = "; ".join(str(r.get("reason")) for r in fp16) or "no fp16 row"
            step.status, step.reason = "failed", f"fp16 did not run: {why}"
        elif "CUDAExecutionProvider" not in devices:
            step.status, step.reason = "failed", f"fp16 ran on {sorted(devices)}, not CUDA"

    def step_tensorrt_tests(self, step: Step) -> None:
        if not self.need_gpu(step):
            return
        pkgs = self.machine.get("packages", {})
        if "tensorrt_version" not in pkgs:
            step.reason = f"tensorrt does not import: {pkgs.get('tensorrt_error', 'not installed')}"
            return
        self._pytest(step, ["tests/export/test_tensorrt.py"], "tensorrt_tests")

    def summary(self, started: float, names: list[str]) -> dict[str, Any]:
        commit = None
        if shutil.which("git"):
            r = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
            )
            commit = r.stdout.strip() or None
        return {
            "schema": 1,
            "tool": "tools/gpu_check.py",
            "commit": commit,
            "started": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(),
            "seconds": round(time.time() - started, 1),
            "steps_requested": names,
            "gpu": (self.machine.get("gpus") or [None])[0],
            "machine": self.machine,
            "steps": [asdict(s) for s in self.steps],
            "failed": [s.name for s in self.steps if s.status == "failed"],
            "passed": [s.name for s in self.steps if s.status == "passed"],
            "skipped": {s.name: s.reason for s in self.steps if s.status == "skipped"},
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="tools/gpu_check.py",
        description="emosdk's GPU check: kernels against the reference, compute-sanitizer, the "
        "attention benchmark, emosdk-bench --engine fp16 on ONNX Runtime's CUDA provider and the "
        "TensorRT tests where tensorrt imports; one JSON summary.",
    )
    default_out = os.environ.get("OUT") or str(REPO / "build" / "gpu_check_out")
    p.add_argument("--out", type=Path, default=Path(default_out), help="folder for the summary")
    p.add_argument(
        "--steps",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(STEPS),
        help=f"comma-separated subset of {','.join(STEPS)} (detect always runs first)",
    )
    p.add_argument("--wheels", type=Path, help="install from this folder of wheels (offline)")
    p.add_argument("--no-install", action="store_true", help="install nothing")
    p.add_argument("--require-gpu", action="store_true", help="exit 2 when no GPU is found")
    p.add_argument(
        "--timeout-scale", type=float, default=1.0, help="multiply every step's time limit"
    )
    args = p.parse_args(argv)
    unknown = [s for s in args.steps if s not in STEPS]
    if unknown:
        p.error(f"unknown steps {unknown}; choose from {', '.join(STEPS)}")
    if args.wheels is not None and not args.wheels.is_dir():
        p.error(f"--wheels {args.wheels}: not a folder")
    args.steps = ["detect", *[s for s in STEPS if s in args.steps and s != "detect"]]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    check = Check(args, args.out)
    try:
        check.run(args.steps)
    finally:
        summary = check.summary(started, args.steps)
        path = args.out / "gpu_check.json"
        path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
        shutil.rmtree(check.tmp, ignore_errors=True)
    print(f"gpu_check: wrote {path}")
    if args.require_gpu and not check.gpu:
        print("gpu_check: no NVIDIA GPU found (--require-gpu)", file=sys.stderr)
        return 2
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
