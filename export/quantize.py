"""int8 variants of a bundle's graphs for CPUs, checked against fp32 before they are kept.

Dynamic quantization (weights int8 ahead of time, activations quantised per call) with ONNX
Runtime's quantizer. Only MatMul/Gemm are quantised by default: ORT's ConvInteger kernel is
slower than its fp32 convolution on x86 CPUs, so quantising the convolutions costs speed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from emosdk.errors import EmosdkError
from emosdk.models.bundle import GRAPH_ROLES, MANIFEST, load_bundle, sha256_file

logger = logging.getLogger("emosdk")

MAX_MACRO_F1_DROP = 0.01
"""An int8 variant is refused when it loses more than one macro-F1 point against fp32."""


class QuantizationRejectedError(EmosdkError):
    """The quantised graphs lose more accuracy than allowed (pass force=True to keep them)."""


def update_manifest(bundle_dir: Path, **changes: object) -> dict:
    """Merge ``changes`` into model.json, re-hash every listed file, write it, verify it."""
    path = Path(bundle_dir) / MANIFEST
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta.update(changes)
    meta["files"] = {f: sha256_file(Path(bundle_dir) / f) for f in meta["files"]}
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    load_bundle(bundle_dir)
    return meta


def quantize_bundle(
    bundle_dir: str | Path,
    *,
    op_types: Sequence[str] = ("MatMul", "Gemm"),
    roles: Sequence[str] = GRAPH_ROLES,
    manifest: str | Path | None = None,
    max_drop: float = MAX_MACRO_F1_DROP,
    force: bool = False,
) -> dict:
    """Add dynamic-int8 variants of ``roles`` to a bundle (``<role>.int8.onnx``).

    With ``manifest`` (held-out files, see ``emosdk-bench accuracy``), fp32 and int8 are both
    evaluated and the variant is refused when macro-F1 drops by more than ``max_drop``, unless
    ``force``. The figures go into model.json under ``metrics.int8_check``.

    Returns:
        The int8 variant map written into model.json (role -> file).

    Raises:
        QuantizationRejectedError: the accuracy check failed and ``force`` is False (the
            variant files are removed again).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    meta = dict(bundle.meta)
    files = dict(meta["files"])
    variant = {}
    for role in roles:
        src = bundle.graph_path(role)
        dst = bundle_dir / f"{role}.int8.onnx"
        quantize_dynamic(
            str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=list(op_types)
        )
        variant[role] = dst.name
        files[dst.name] = ""
        logger.info(
            "quantised %s: %.2f MB -> %.2f MB",
            role,
            src.stat().st_size / 1e6,
            dst.stat().st_size / 1e6,
        )
    variants = {**meta.get("variants", {}), "int8": variant}
    update_manifest(bundle_dir, files=files, variants=variants)
    if manifest is None:
        return variant
    from emosdk import Recognizer
    from emosdk.bench import accuracy

    scores = {}
    for precision in ("fp32", "int8"):
        with Recognizer(model=bundle_dir, precision=precision, smoothing="none") as rec:
            scores[precision] = accuracy(rec, Path(manifest), "auto", None, robustness=False)
    drop = scores["fp32"]["macro_f1"] - scores["int8"]["macro_f1"]
    check = {
        "manifest": str(manifest),
        "fp32": {k: scores["fp32"][k] for k in ("n", "accuracy", "macro_f1")},
        "int8": {k: scores["int8"][k] for k in ("n", "accuracy", "macro_f1")},
        "macro_f1_drop": drop,
        "max_drop": max_drop,
        "forced": bool(force and drop > max_drop),
    }
    if drop > max_drop and not force:
        for f in variant.values():
            (bundle_dir / f).unlink()
            files.pop(f)
        variants.pop("int8")
        update_manifest(bundle_dir, files=files, variants=variants)
        raise QuantizationRejectedError(
            f"int8 loses {100 * drop:.2f} macro-F1 points on {manifest} (allowed "
            f"{100 * max_drop:.2f}); variant removed. Pass force=True to keep it anyway."
        )
    metrics = {**meta.get("metrics", {}), "int8_check": check}
    update_manifest(bundle_dir, metrics=metrics)
    return variant
