"""Model bundles: loading with integrity checks, and the registry of bundled models."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from .bundle import GraphSpec, ModelBundle, StreamParams, TensorSpec, load_bundle

BUNDLED_DIR = Path(__file__).parent / "bundled"
DEFAULT_MODEL = "default"


def available_models() -> list[str]:
    """Names of the models shipped inside the package (folders with a model.json)."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "model.json").is_file())


def resolve_model(model: str | Path) -> Path:
    """Map a bundled model name or a bundle folder path to the folder.

    Raises:
        ModelError: neither a bundled name nor a folder with a model.json.
    """
    if (
        isinstance(model, Path)
        or any(sep in str(model) for sep in ("/", "\\"))
        or str(model).startswith(".")
    ):
        path = Path(model).expanduser()
        if not (path / "model.json").is_file():
            raise ModelError(f"{path}: not a model bundle (no model.json in this folder)")
        return path
    path = BUNDLED_DIR / str(model)
    if (path / "model.json").is_file():
        return path
    raise ModelError(
        f"unknown model {model!r}: bundled models are {available_models()}; "
        "or pass the path of a bundle folder"
    )


def load_model(model: str | Path = DEFAULT_MODEL, *, verify: bool = True) -> ModelBundle:
    """Resolve and load a model bundle, verifying every file's SHA-256 first."""
    return load_bundle(resolve_model(model), verify=verify)


__all__ = [
    "BUNDLED_DIR",
    "DEFAULT_MODEL",
    "GraphSpec",
    "ModelBundle",
    "StreamParams",
    "TensorSpec",
    "available_models",
    "load_bundle",
    "load_model",
    "resolve_model",
]
