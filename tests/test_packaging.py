"""The wheel: pure Python by default, runtime without torch, export and bundled models inside."""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "EMOSDK_BUILD_NATIVE"}  # the default build
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        check=True,
        env=env,
    )
    (path,) = out.glob("*.whl")
    return zipfile.ZipFile(path)


def test_default_wheel_is_pure_python(wheel):
    assert Path(wheel.filename).name.endswith("-py3-none-any.whl")
    assert not [n for n in wheel.namelist() if n.endswith((".so", ".pyd", ".dll"))]


def test_runtime_requirements_are_numpy_and_onnxruntime_only(wheel):
    meta = wheel.read(next(n for n in wheel.namelist() if n.endswith("METADATA"))).decode()
    base = [r for r in re.findall(r"^Requires-Dist: (.+)$", meta, re.M) if "extra ==" not in r]
    assert sorted(re.split(r"[<>=;\s]", r)[0] for r in base) == ["numpy", "onnxruntime"]
    torch_pins = re.findall(r"^Requires-Dist: (torch[^;]*);", meta, re.M)
    assert torch_pins and all(p == "torch==2.13.0" for p in torch_pins)


def test_wheel_ships_export_and_bundled_models(wheel):
    names = set(wheel.namelist())
    assert "emosdk/export/bundle.py" in names
    bundled = REPO / "sdk" / "emosdk" / "models" / "bundled"
    for f in bundled.rglob("*"):
        if f.is_file() and "__pycache__" not in f.parts:
            assert f"emosdk/models/bundled/{f.relative_to(bundled).as_posix()}" in names
