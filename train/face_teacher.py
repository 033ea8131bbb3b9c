"""Teacher probabilities for distilling the face encoder: the mean softmax of one or more
exported face encoders (ONNX graphs with a ``face_logits`` output, through onnxruntime), each
averaged over test-time views (:func:`train.common.face_views`), computed once and cached.

The teachers are ONNX graphs rather than torch checkpoints so that any exported encoder can
teach: the default bundle's, or one of :mod:`train.face_recipe`'s own runs after export.

    python -m train.face_teacher --graph sdk/emosdk/models/bundled/default/face_encoder.onnx \\
        --tta 10crop --out runs/faceenc/teacher_shipped.npz
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from emosdk.features.face import FaceParams

from . import data as D
from .common import TTA
from .distill import teacher_probs

logger = logging.getLogger("emosdk.train")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--graph", type=Path, action="append", required=True, help="repeatable")
    p.add_argument("--tta", default="10crop", choices=list(TTA))
    p.add_argument("--usage", default="Training")
    p.add_argument("--out", type=Path, required=True, help="cache .npz")
    p.add_argument("--data-root", type=Path, default=D.DATA_ROOT)
    p.add_argument("--cache-dir", default=str(D.CACHE_DIR))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    x, y = D.load_fer2013(args.usage, FaceParams(), args.data_root, cache_dir=cache_dir)
    probs = teacher_probs(args.graph, x, args.tta, args.out, args.threads)
    acc = float((probs.argmax(-1) == y).mean())
    print(json.dumps({"usage": args.usage, "n": len(y), "teacher_accuracy": round(acc, 4)}))


if __name__ == "__main__":
    main()
