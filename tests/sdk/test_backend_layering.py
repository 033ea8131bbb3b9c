"""The runtime's backends read, cache and run engines without the export package (which builds
them): arrows point train -> emosdk.export -> emosdk, never back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BACKENDS = Path(__file__).resolve().parents[2] / "sdk" / "emosdk" / "backends"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_no_backend_module_imports_the_export_package():
    files = sorted(BACKENDS.glob("*.py"))
    assert {f.name for f in files} >= {"engines.py", "tensorrt.py", "onnxruntime.py"}
    offenders = {
        f.name: sorted(m for m in _imported_modules(f) if m.split(".")[:2] == ["emosdk", "export"])
        for f in files
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_loading_the_tensorrt_path_leaves_export_unimported():
    code = (
        "import sys\n"
        "import emosdk.backends.engines as E, emosdk.backends.tensorrt as T\n"
        "from emosdk.backends import available_backends\n"
        "available_backends(); T.tensorrt_unavailable_reason(); E.EngineCache().entries()\n"
        "bad = [m for m in sys.modules if m.startswith(('emosdk.export', 'torch', 'train'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
