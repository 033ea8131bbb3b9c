"""Train the face encoder alone on FER2013 Training, selected on PublicTest (the official
protocol: PrivateTest, the report split, is held back here).

The same :class:`~train.models.FaceEncoder`, augmentation, class weights and resumable stage
loop as the seed pipeline (train/train_seed.py), with its own width, epochs and a test-time
average over views (``--tta``: none, flip, 10crop). Prints and writes ``summary.json``:
PublicTest accuracy, macro-F1, per-class F1, confusion and the parameter count.

    python -m train.train_face --out /tmp/emosdk_face --epochs 30 --widths 40,80,160,256
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emosdk.features.face import FaceParams
from emosdk.metrics import classification_report

from . import FER_CLASSES
from . import data as D
from .common import TTA, augment_faces, class_weights, face_views, log_json, run_stage
from .models import FaceEncoder, count_params


@torch.no_grad()
def predict_faces(face: FaceEncoder, x: np.ndarray, tta: str) -> np.ndarray:
    """Class probabilities of (N, 1, S, S) faces, averaged over the test-time views of ``tta``
    (:func:`train.common.face_views`: none, flip or 10crop)."""
    face.eval()
    views = face_views(x, tta)
    probs = np.zeros((len(x), len(FER_CLASSES)), np.float32)
    for v in views:
        for s in range(0, len(v), 512):
            xb = torch.from_numpy(np.ascontiguousarray(v[s : s + 512]))
            probs[s : s + 512] += F.softmax(face(xb)[1], -1).numpy()
    return probs / len(views)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/emosdk_face"))
    p.add_argument("--data-root", type=Path, default=D.DATA_ROOT)
    p.add_argument("--cache-dir", default=str(D.CACHE_DIR), help='"" = no cache')
    p.add_argument("--widths", default="40,80,160,256")
    p.add_argument("--d-video", type=int, default=128)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--tta", default="flip", choices=list(TTA), help="test-time views")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help=">0: smoke run, faces per class")
    p.add_argument("--max-steps", type=int, default=0)
    args = p.parse_args(argv)
    command = "python -m train.train_face " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    face_p = FaceParams()
    cache = Path(args.cache_dir) if args.cache_dir and not args.limit else None
    limit = args.limit or None
    x_tr, y_tr = D.load_fer2013("Training", face_p, args.data_root, limit, cache_dir=cache)
    x_pt, y_pt = D.load_fer2013("PublicTest", face_p, args.data_root, limit, cache_dir=cache)
    log_json(args.out, stage="data", fer={"Training": len(x_tr), "PublicTest": len(x_pt)})

    face = FaceEncoder(
        d_video=args.d_video,
        widths=tuple(int(w) for w in args.widths.split(",")),
        n_classes=len(FER_CLASSES),
    )
    weights = class_weights(y_tr, len(FER_CLASSES))
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    gen = torch.Generator().manual_seed(args.seed)

    def step(rng: np.random.Generator) -> torch.Tensor:
        idx = torch.from_numpy(rng.integers(0, len(xt), args.batch))
        xb = augment_faces(xt[idx], gen, pad=4, flip=True)
        return F.cross_entropy(face(xb)[1], yt[idx], weight=weights, label_smoothing=0.1)

    def evaluate() -> dict:
        pred = predict_faces(face, x_pt, args.tta).argmax(-1)
        m = classification_report(y_pt, pred, FER_CLASSES)
        return {"publictest_acc": m["accuracy"], "publictest_macro_f1": m["macro_f1"]}

    res = run_stage(
        args.out,
        "face",
        face,
        args.epochs,
        args.lr,
        max(1, len(xt) // args.batch),
        step,
        evaluate,
        "publictest_acc",
        gen,
        seed=args.seed,
        max_steps=args.max_steps,
    )
    pred = predict_faces(face, x_pt, args.tta).argmax(-1)
    summary = {
        "command": command,
        "model": "FaceEncoder",
        "widths": args.widths,
        "params": count_params(face),
        "tta": args.tta,
        "selected_epoch": res["selected_epoch"],
        "publictest": classification_report(y_pt, pred, FER_CLASSES),
        "note": "FER2013 Training, selected on PublicTest (also the figure reported, as in the "
        "issue); PrivateTest is held back",
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    log_json(args.out, stage="done", **{k: v for k, v in summary.items() if k != "publictest"})
    print(json.dumps({k: summary[k] for k in ("params", "selected_epoch")}))
    print(json.dumps({k: summary["publictest"][k] for k in ("accuracy", "macro_f1")}))
    return summary


if __name__ == "__main__":
    main()
