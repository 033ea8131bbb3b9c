"""Does MediaPipe's face geometry (52 blendshapes, 478 landmarks) add expression evidence to the
face encoder's embedding? Logistic regressions on frozen features, with and without it.

Features per face (cached under --cache, resumable):
- ``emb``: the bundled face encoder's ``face_emb`` (128-d) of the 48x48 grey face, as the
  runtime feeds it (emosdk.features.normalize_face);
- ``bs``: the 52 blendshapes and ``geo``: the 478 landmarks (x, y) levelled on the eye corners,
  centred on their mean and scaled by the eye-corner distance (956-d), from the runtime's
  BlazeFace -> landmarks -> blendshapes (emosdk.perception). CK+ and FER2013 faces are 48x48
  crops: upscaled 3x by pixel repetition onto a 288x288 grey canvas (as the detection tests);
  where BlazeFace finds no face the landmark region is the known face square.

Protocols:
- CK+ (../shared/data/ckplus48): the five classes shared with the project's label set
  (anger, disgust, fear, happiness, sadness); 10-fold subject-independent cross-validation
  (folds by subject); also all 7 CK+ classes.
- FER2013: train on Training, report on PublicTest, 7 classes.
- CREMA-D AV clips (actor 1001, intended labels): trained on FER2013 Training mapped to the six
  project classes (surprise dropped), every frame of the six clips through the runtime path
  (BlazeFace, aligned crop, face encoder; landmarks on the same frame); accuracy per frame and
  per clip (mean probability). Six clips: a smoke figure, not a benchmark.

    OMP_NUM_THREADS=1 python benchmarks/geometry_evidence.py --fer-train-limit 8000 \
        --out benchmarks/results/face_geometry_evidence.json

Needs torch (repo-only: the logistic regressions use its L-BFGS).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MODELS = REPO / "sdk" / "emosdk" / "models" / "bundled" / "default"
SHARED5 = ("anger", "disgust", "fear", "happiness", "sadness")
LABELS6 = ("anger", "disgust", "fear", "happiness", "neutral", "sadness")
FER7 = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
CODES = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happiness", "NEU": "neutral",
         "SAD": "sadness"}  # fmt: skip


class Extractor:
    def __init__(self) -> None:
        import onnxruntime as ort

        from emosdk.features import FaceParams
        from emosdk.perception import BlazeFaceDetector, FaceLandmarker

        o = ort.SessionOptions()
        o.intra_op_num_threads = 1
        self.enc = ort.InferenceSession(
            str(MODELS / "face_encoder.onnx"), o, providers=["CPUExecutionProvider"]
        )
        meta = json.loads((MODELS / "model.json").read_text())["face"]
        self.params = FaceParams(**meta)
        self.det = BlazeFaceDetector(MODELS / "face_detector.onnx")
        self.lmk = FaceLandmarker(MODELS / "face_landmarks.onnx", MODELS / "face_blendshapes.onnx")

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        from emosdk.features import normalize_face

        x = np.stack([normalize_face(c, self.params) for c in crops])
        return self.enc.run(["face_emb"], {"face": x})[0]

    def geometry(self, frame: np.ndarray, fallback_box) -> tuple[np.ndarray, np.ndarray, bool]:
        """(blendshapes 52, levelled landmarks 956, detected?)."""
        boxes = self.det.detect(frame)
        box = boxes[0] if boxes else fallback_box
        refined = self.lmk.refine(frame, box)
        return refined.blendshapes, level(refined.landmarks), bool(boxes)


def level(lm: np.ndarray) -> np.ndarray:
    p = lm[:, :2].astype(np.float64)
    a, b = p[33], p[263]
    d = b - a
    iod = float(np.hypot(*d)) or 1.0
    c, s = d / iod
    rot = np.array([[c, s], [-s, c]])
    q = (p - p.mean(0)) @ rot.T / iod
    return q.astype(np.float32).ravel()


def pad_face(grey: np.ndarray, scale: int = 3, canvas: int = 288) -> np.ndarray:
    big = np.repeat(np.repeat(grey, scale, axis=0), scale, axis=1)
    out = np.full((canvas, canvas), 128, np.uint8)
    y = (canvas - big.shape[0]) // 2
    out[y : y + big.shape[0], y : y + big.shape[1]] = big
    return np.ascontiguousarray(np.repeat(out[..., None], 3, axis=2))


def corpus_features(ex: Extractor, corpus: str, rows: list[dict], cache: Path) -> dict:
    """emb, bs, geo, detected for the corpus images (cached in chunks of 1000)."""
    import cv2

    from emosdk.perception import FaceBox

    cache.mkdir(parents=True, exist_ok=True)
    parts = []
    box = FaceBox(72, 72, 144, 144)  # the pasted 48x48 crop
    for start in range(0, len(rows), 1000):
        path = cache / f"{corpus}_{start:06d}_{len(rows)}.npz"
        if not path.is_file():
            t0 = time.time()
            chunk = rows[start : start + 1000]
            greys = [cv2.imread(str(DATA / corpus / r["file"]), 0) for r in chunk]
            emb = np.concatenate([ex.embed(greys[i : i + 256]) for i in range(0, len(greys), 256)])
            geo = [ex.geometry(pad_face(g), box) for g in greys]
            np.savez(
                path,
                emb=emb,
                bs=np.stack([g[0] for g in geo]),
                geo=np.stack([g[1] for g in geo]),
                detected=np.array([g[2] for g in geo]),
            )
            print(f"{path.name}: {len(chunk)} faces in {time.time() - t0:.0f} s", flush=True)
        parts.append(dict(np.load(path)))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def clip_features(ex: Extractor, cache: Path) -> dict:
    from emosdk.capture.media import read_media
    from emosdk.perception import align

    path = cache / "cremad_clips.npz"
    if not path.is_file():
        feats: dict[str, list] = {"emb": [], "bs": [], "geo": [], "label": [], "clip": []}
        for k, clip in enumerate(sorted((REPO / "tests/data/cremad").glob("1001_*.flv"))):
            for _, f in read_media(clip)[1]:
                b = ex.det.detect(f)[0]
                feats["emb"].append(ex.embed([align(f, b)])[0])
                r = ex.lmk.refine(f, b)
                feats["bs"].append(r.blendshapes)
                feats["geo"].append(level(r.landmarks))
                feats["label"].append(LABELS6.index(CODES[clip.name.split("_")[2]]))
                feats["clip"].append(k)
        np.savez(path, **{k: np.array(v) for k, v in feats.items()})
    return dict(np.load(path))


def fit_lr(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float) -> tuple:
    """Multinomial logistic regression (standardised inputs, L2), torch L-BFGS."""
    import torch

    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.long)
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return mu, sd, w.detach().numpy(), b.detach().numpy()


def predict(model, x: np.ndarray) -> np.ndarray:
    mu, sd, w, b = model
    z = ((x - mu) / sd) @ w + b
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def macro_f1(y: np.ndarray, p: np.ndarray, n: int) -> float:
    f1 = []
    for c in range(n):
        tp = np.sum((p == c) & (y == c))
        if np.sum(y == c) == 0:
            continue
        prec = tp / max(1, np.sum(p == c))
        rec = tp / np.sum(y == c)
        f1.append(0 if tp == 0 else 2 * prec * rec / (prec + rec))
    return float(np.mean(f1))


FEATURE_SETS = {
    "blendshapes": ("bs",),
    "landmarks": ("geo",),
    "blendshapes+landmarks": ("bs", "geo"),
    "embedding": ("emb",),
    "embedding+blendshapes": ("emb", "bs"),
    "embedding+blendshapes+landmarks": ("emb", "bs", "geo"),
}


def stack(f: dict, keys: tuple, idx=slice(None)) -> np.ndarray:
    return np.concatenate([f[k][idx].reshape(len(f[k][idx]), -1) for k in keys], axis=1)


def ckplus(ex, cache, l2) -> dict:
    with open(DATA / "ckplus48" / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    f = corpus_features(ex, "ckplus48", rows, cache)
    subjects = np.array([r["subject"] for r in rows])
    labels = [r["label"] for r in rows]
    out = {"detected": float(f["detected"].mean()), "n": len(rows)}
    for name, classes in (("shared_5_classes", SHARED5), ("all_7_classes", None)):
        cls = classes or tuple(sorted(set(labels)))
        keep = np.array([lab in cls for lab in labels])
        y = np.array([cls.index(lab) if lab in cls else -1 for lab in labels])[keep]
        subj = subjects[keep]
        uniq = np.array(sorted(set(subj)))
        rng = np.random.default_rng(0)
        folds = np.array_split(rng.permutation(uniq), 10)
        res = {"n": int(keep.sum()), "subjects": len(uniq), "folds": 10}
        for fs, keys in FEATURE_SETS.items():
            x = stack(f, keys)[keep]
            pred = np.zeros(len(y), int)
            for fold in folds:
                test = np.isin(subj, fold)
                m = fit_lr(x[~test], y[~test], len(cls), l2)
                pred[test] = predict(m, x[test]).argmax(1)
            res[fs] = {
                "accuracy": round(float((pred == y).mean()), 4),
                "macro_f1": round(macro_f1(y, pred, len(cls)), 4),
            }
            print("ck+", name, fs, res[fs], flush=True)
        out[name] = res
    return out


def fer_rows(usage: str, limit: int | None) -> list[dict]:
    with open(DATA / "fer2013" / "manifest.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["usage"] == usage]
    if limit:
        rows = rows[:: max(1, len(rows) // limit)][:limit]
    return rows


def fer_and_clips(ex, cache, l2, train_limit) -> dict:
    tr_rows, te_rows = fer_rows("Training", train_limit), fer_rows("PublicTest", None)
    tr = corpus_features(ex, "fer2013", tr_rows, cache / "train")
    te = corpus_features(ex, "fer2013", te_rows, cache / "publictest")
    ytr = np.array([FER7.index(r["label"]) for r in tr_rows])
    yte = np.array([FER7.index(r["label"]) for r in te_rows])
    out = {
        "train": len(tr_rows),
        "test": len(te_rows),
        "detected_train": float(tr["detected"].mean()),
        "detected_test": float(te["detected"].mean()),
    }
    clips = clip_features(ex, cache)
    six = ytr != FER7.index("surprise")
    y6 = np.array([LABELS6.index(FER7[c]) for c in ytr[six]])
    clip_res = {"frames": len(clips["label"]), "clips": 6}
    for fs, keys in FEATURE_SETS.items():
        m = fit_lr(stack(tr, keys), ytr, 7, l2)
        pred = predict(m, stack(te, keys)).argmax(1)
        out[fs] = {
            "accuracy": round(float((pred == yte).mean()), 4),
            "macro_f1": round(macro_f1(yte, pred, 7), 4),
        }
        print("fer2013 publictest", fs, out[fs], flush=True)
        m6 = fit_lr(stack(tr, keys, six), y6, 6, l2)
        prob = predict(m6, stack(clips, keys))
        per_clip = [int(prob[clips["clip"] == k].mean(0).argmax()) for k in range(6)]
        truth = [int(clips["label"][clips["clip"] == k][0]) for k in range(6)]
        clip_res[fs] = {
            "frame_accuracy": round(float((prob.argmax(1) == clips["label"]).mean()), 4),
            "clips_right": int(sum(p == t for p, t in zip(per_clip, truth))),
            "clip_predictions": [LABELS6[p] for p in per_clip],
        }
        print("cremad clips", fs, clip_res[fs], flush=True)
    return {"fer2013_publictest": out, "cremad_av_clips": clip_res}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--out", type=Path, default=REPO / "benchmarks/results/face_geometry_evidence.json"
    )
    p.add_argument("--cache", type=Path, default=Path("runs/face/features"))
    p.add_argument("--l2", type=float, default=1e-3, help="L2 weight of the regressions")
    p.add_argument("--fer-train-limit", type=int, default=None, help="FER2013 Training faces")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    ex = Extractor()
    result = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/geometry_evidence.py "
        + " ".join(sys.argv[1:]),
        "l2": args.l2,
        "features": {k: list(v) for k, v in FEATURE_SETS.items()},
        "ckplus": ckplus(ex, args.cache, args.l2),
    }
    result.update(fer_and_clips(ex, args.cache, args.l2, args.fer_train_limit))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
