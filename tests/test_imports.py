"""Dependencies point one way: train -> emosdk.export -> emosdk (the runtime).

The runtime installs on an edge device with numpy and onnxruntime only: it never imports torch,
the repository's ``train`` package or ``emosdk.export`` (which builds what the runtime runs), not
even lazily inside a function. ``emosdk.export`` ships in the wheel, so it never imports the
repo-only ``train``. Both are checked by reading every import statement (function-level ones
included) and by importing every runtime module in a fresh interpreter.
"""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNTIME = REPO / "sdk" / "emosdk"
EXPORT = REPO / "export"

# torch-side helpers inside the runtime package that a user imports on purpose (never imported
# by another runtime module): the torch reference backend and the kernels' torch/Triton op
TORCH_SIDE = {
    "emosdk.backends.torch",
    "emosdk.kernels",
    "emosdk.kernels.attention_op",
    "emosdk.kernels.triton_attention",
}


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def imports(path: Path, module: str) -> set[str]:
    """Every module a file imports, absolute, wherever the statement is."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base]) if base else ".".join(parent)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return found


def offending(found: set[str], banned: tuple[str, ...]) -> set[str]:
    return {m for m in found if any(m == b or m.startswith(b + ".") for b in banned)}


def test_the_runtime_never_imports_torch_train_or_export():
    bad = {}
    for path in sorted(RUNTIME.rglob("*.py")):
        mod = module_name(path, RUNTIME, "emosdk")
        if mod in TORCH_SIDE:
            continue
        banned = ("torch", "triton", "train", "emosdk.export", *TORCH_SIDE)
        hits = offending(imports(path, mod), banned)
        if hits:
            bad[mod] = sorted(hits)
    assert not bad, f"runtime modules import what the runtime must not: {bad}"


def test_export_never_imports_train():
    bad = {}
    for path in sorted(EXPORT.rglob("*.py")):
        mod = module_name(path, EXPORT, "emosdk.export")
        hits = offending(imports(path, mod), ("train",))
        if hits:
            bad[mod] = sorted(hits)
    assert not bad, f"emosdk.export (shipped) imports the repo-only train package: {bad}"


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text("def f():\n    from ..export import tensorrt\n    import torch.nn\n")
    found = imports(src, "emosdk.backends.mod")
    assert offending(found, ("emosdk.export", "torch")) == {
        "emosdk.export",
        "emosdk.export.tensorrt",
        "torch.nn",
    }


def test_importing_every_runtime_module_loads_no_torch_train_or_export():
    names = [module_name(p, RUNTIME, "emosdk") for p in sorted(RUNTIME.rglob("*.py"))]
    names = [n for n in names if n not in TORCH_SIDE]
    code = f"""
import importlib, sys
names = {names!r}
for name in names:
    try:
        importlib.import_module(name)
    except ImportError as e:  # an optional dependency (e.g. cv2) may be absent: that is fine
        print("optional:", name, e)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "train", "triton")
                or m == "emosdk.export" or m.startswith("emosdk.export."))
assert not loaded, loaded
print(len(names), "modules")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
