"""CK+ subject-independent cross-validation of a face encoder, on the classes CK+ shares with the
project's six labels.

CK+48 (``../shared/data/ckplus48``) holds peak-expression frames of about 98 subjects in seven
classes; five are project labels (anger, disgust, fear, happiness, sadness), CK+ has no neutral,
and contempt (45 faces) and surprise (207 faces) are dropped (``train.corpora`` maps them to
None: contempt has no project class, and surprise is outside the six labels the SDK reports).
The folds split the subjects (the ``subject`` column, from the file names ``S010_004_...``): no
subject has faces on both sides of a fold, and the several frames of one sequence stay together.

Modes (each reported per fold and as mean and standard deviation over the folds, plus the pooled
accuracy and macro-F1 over every test face):

* ``zero_shot``: the encoder's FER2013 head (``face_logits``) restricted to the five shared
  classes; nothing is trained on CK+;
* ``probe``: a multinomial logistic regression (L2, standardised features, full-batch L-BFGS) on
  the encoder's ``face_emb`` of the training subjects, scored on the test subjects;
* ``finetune``: the whole torch encoder (``--checkpoint``, a :mod:`train.face_recipe`
  ``best.pt``) fine-tuned per fold on the training subjects (its FER head, labels mapped to
  their FER classes, prediction restricted to the five), with flips and small affine warps.

Faces go through :func:`emosdk.features.normalize_face`, one view each, as the runtime embeds a
face crop.

    python -m train.ckplus_cv --graph runs/faceenc/r1/face_encoder.onnx \\
        --modes zero_shot,probe --out-json docs/results/ckplus_cv.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emosdk.features.face import FaceParams, normalize_face
from emosdk.metrics import classification_report

from . import FER_CLASSES, LABELS
from . import data as D

logger = logging.getLogger("emosdk.train")

SHARED = ("anger", "disgust", "fear", "happiness", "sadness")
"""The CK+ classes that are project labels (CK+ has no neutral; contempt and surprise dropped)."""
MODES = ("zero_shot", "probe", "finetune")


def load_ckplus(root: Path = D.DATA_ROOT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CK+48 faces on the shared classes: faces (N, 1, 48, 48) float32 normalised as the runtime
    does, labels (N,) indexing :data:`SHARED`, subjects (N,) str."""
    import cv2

    from .corpora import load_corpus

    corpus = load_corpus("ckplus48", root)
    logger.info("%s", corpus.report())
    params = FaceParams()
    x = np.stack(
        [
            normalize_face(cv2.imread(str(it.path), cv2.IMREAD_GRAYSCALE), params)
            for it in corpus.items
        ]
    )
    y = np.array([SHARED.index(LABELS[it.label]) for it in corpus.items], np.int64)
    return x, y, np.array([it.speaker for it in corpus.items])


def subject_folds(subjects: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold index (N,) per face: the sorted subjects shuffled with ``seed`` and dealt to ``k``
    folds in turn, so every subject's faces share one fold."""
    names = np.array(sorted(set(subjects.tolist())))
    names = names[np.random.default_rng(seed).permutation(len(names))]
    fold_of = {s: i % k for i, s in enumerate(names)}
    return np.array([fold_of[s] for s in subjects])


def onnx_outputs(graph: Path, x: np.ndarray, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(face_emb, face_logits) of an exported face encoder on faces ``x``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
    emb, logits = sess.run(["face_emb", "face_logits"], {"face": x.astype(np.float32)})
    return emb, logits


def fer_shared_columns() -> list[int]:
    """Columns of the FER2013 head for :data:`SHARED`, in that order."""
    return [FER_CLASSES.index(c) for c in SHARED]


def fit_probe(feats: np.ndarray, y: np.ndarray, n_classes: int, l2: float) -> tuple:
    """Multinomial logistic regression on standardised features; returns (mean, std, W, b)."""
    mu, sd = feats.mean(0), feats.std(0) + 1e-6
    z = torch.from_numpy((feats - mu) / sd).float()
    t = torch.from_numpy(y)
    W = torch.zeros(feats.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ W + b, t) + l2 * (W**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return mu, sd, W.detach().numpy(), b.detach().numpy()


def probe_predict(model: tuple, feats: np.ndarray) -> np.ndarray:
    mu, sd, W, b = model
    return (((feats - mu) / sd) @ W + b).argmax(-1)


def finetune_fold(
    checkpoint: Path,
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_te: np.ndarray,
    epochs: int,
    lr: float,
    seed: int,
) -> np.ndarray:
    """Fine-tune a face_recipe checkpoint on one fold's training faces; predictions on x_te."""
    from .common import load_state
    from .face_aug import geometric
    from .face_model import build_model, predict

    state = load_state(checkpoint)
    model = build_model(state["config"])
    model.load_state_dict(state["model"])
    cols = torch.tensor(fer_shared_columns())
    target = cols[torch.from_numpy(y_tr)]
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    batch = 32
    steps = epochs * max(1, len(x_tr) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    torch.manual_seed(seed)
    for step in range(steps):
        rng = np.random.default_rng([seed, step])
        idx = rng.integers(0, len(x_tr), batch)
        xb = geometric(torch.from_numpy(x_tr[idx]), rng, rotate_deg=8.0, shift=0.06)
        model.train()
        loss = F.cross_entropy(model(xb)[1], target[idx], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    probs = predict(model, x_te)
    return probs[:, fer_shared_columns()].argmax(-1)


def run_cv(
    x: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    modes: list[str],
    graph: Path | None = None,
    checkpoint: Path | None = None,
    l2: float = 1e-3,
    ft_epochs: int = 8,
    ft_lr: float = 0.01,
    threads: int = 1,
) -> dict:
    """Per-fold and overall results of each mode (see the module docstring)."""
    k = int(folds.max()) + 1
    emb = logits = None
    if graph is not None:
        emb, logits = onnx_outputs(graph, x, threads)
    out = {}
    for mode in modes:
        if mode in ("zero_shot", "probe") and graph is None:
            raise ValueError(f"mode {mode!r} needs --graph")
        if mode == "finetune" and checkpoint is None:
            raise ValueError("mode 'finetune' needs --checkpoint")
        pred = np.empty_like(y)
        accs = []
        for f in range(k):
            te, tr = folds == f, folds != f
            if mode == "zero_shot":
                pred[te] = logits[te][:, fer_shared_columns()].argmax(-1)
            elif mode == "probe":
                pred[te] = probe_predict(fit_probe(emb[tr], y[tr], len(SHARED), l2), emb[te])
            else:
                pred[te] = finetune_fold(checkpoint, x[tr], y[tr], x[te], ft_epochs, ft_lr, f)
            accs.append(float((pred[te] == y[te]).mean()))
            logger.info("%s fold %d: %.3f (%d faces)", mode, f, accs[-1], int(te.sum()))
        rep = classification_report(y, pred, SHARED)
        out[mode] = {
            "fold_accuracy": [round(a, 4) for a in accs],
            "mean_accuracy": round(float(np.mean(accs)), 4),
            "std_accuracy": round(float(np.std(accs)), 4),
            "pooled": rep,
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--graph", type=Path, help="exported face encoder (ONNX)")
    p.add_argument("--checkpoint", type=Path, help="face_recipe best.pt, for --modes finetune")
    p.add_argument("--modes", default="zero_shot,probe")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--l2", type=float, default=1e-3)
    p.add_argument("--ft-epochs", type=int, default=8)
    p.add_argument("--ft-lr", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", type=Path, default=D.DATA_ROOT)
    p.add_argument("--out-json", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            p.error(f"--modes: {m!r} is not one of {', '.join(MODES)}")
    x, y, subjects = load_ckplus(args.data_root)
    folds = subject_folds(subjects, args.folds)
    res = run_cv(x, y, folds, modes, args.graph, args.checkpoint, args.l2, args.ft_epochs,
                 args.ft_lr, args.threads)  # fmt: skip
    result = {
        "command": "python -m train.ckplus_cv "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "graph": str(args.graph) if args.graph else None,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "classes": list(SHARED),
        "faces": len(y),
        "subjects": len(set(subjects.tolist())),
        "folds": args.folds,
        "dropped": "contempt and surprise (not among the project labels); CK+ has no neutral",
        "modes": res,
    }
    for m, r in res.items():
        line = {"mode": m, "mean_accuracy": r["mean_accuracy"], "std": r["std_accuracy"]}
        print(json.dumps(line | {"pooled_macro_f1": round(r["pooled"]["macro_f1"], 4)}))
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
