"""What a source install downloads: the build environment holds the build backend alone (no
triton, cuda-python or jsonschema), the runtime install neither, and the `tensorrt` extra pins a
cuda-python whose runtime works on a CUDA 12 driver (JetPack 6). Resolved for real by pip
(--dry-run --report: metadata only, nothing installed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("triton", "cuda-python", "cuda-bindings", "jsonschema", "torch")


def _name(req: str) -> str:
    return re.split(r"[<>=!~;\[\s]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_build_requirements_are_the_build_backend_alone():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    requires = meta["build-system"]["requires"]
    assert [_name(r) for r in requires] == ["scikit-build-core"], requires
    extras = meta["project"]["optional-dependencies"]
    (cuda,) = [r for r in extras["tensorrt"] if _name(r) == "cuda-python"]
    assert "<13" in cuda and ">=12.6.1" in cuda  # CUDA 12 runtime, with cuda.bindings


def _dry_run(tmp_path: Path, target: str) -> tuple[list[dict], str]:
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-v"]
    cmd += ["--disable-pip-version-check", "--report", str(report), target]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return json.loads(report.read_text())["install"], r.stdout + r.stderr


@pytest.mark.slow
def test_pip_install_dot_downloads_no_triton_and_no_cuda_python(tmp_path):
    installs, log = _dry_run(tmp_path, ".")
    names = {i["metadata"]["name"].lower() for i in installs}
    assert "emosdk" in names and not names & set(HEAVY), names
    # the isolated build environment: with -v, pip shows the output of the pip that fills it
    # ("Would install" is the dry run's own line; "Successfully installed" is only that one's)
    lines = re.findall(r"Successfully installed (.+)", log)
    assert len(lines) == 1, log[-3000:]
    build_env = {re.sub(r"-[0-9][^-]*$", "", p).lower() for p in lines[0].split()}
    assert "scikit-build-core" in build_env and not build_env & set(HEAVY), build_env


@pytest.mark.slow
def test_tensorrt_extra_resolves_to_a_cuda_12_cuda_python(tmp_path):
    installs, _ = _dry_run(tmp_path, ".[tensorrt]")
    versions = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in installs}
    assert versions["cuda-python"].startswith("12."), versions
    assert not {"triton", "torch"} & set(versions)
