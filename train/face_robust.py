"""Robust fine-tune of a shipped face encoder that keeps its embedding space (issue 15, point 4).

It reads plain CNN graphs (:func:`cnn_from_onnx`: the seed's VGG-style encoder, which bundles
0.3.0 and 0.3.1 shipped hardened by it); the residual encoder of the default bundle since 0.5.1
was trained with the corruptions from the start by ``train.face_recipe`` and is refused here.

The bundle's fusion was trained on one face encoder's embeddings; a new encoder means a new
fusion. This fine-tune makes the encoder hold up under capture corruptions *without* moving its
embedding space, so that the fusion stays valid: the student starts from the encoder's own
weights and learns to give, for a corrupted face, the embedding the frozen original gives for
the clean face (feature-consistency training), while keeping its clean embeddings where they
were:

    loss = |s(corrupt(x)) - t(x)|^2 / var(t) + |s(x) - t(x)|^2 / var(t)

with ``t`` the frozen original, ``var(t)`` the variance of its embeddings over the training
faces (the loss is in units of that spread). Faces: FER2013 Training, read as the robustness
benchmark reads them and normalised as ``Recognizer.predict(face=...)`` does, mirrored at random
(the teacher sees the same mirror). Corruptions: :func:`train.fusion_data.corrupt_face`, the
benchmark's kinds with this pipeline's own parameter ranges and seeds (darkening, sensor noise,
motion blur over 4-35 % of the face, JPEG 5-30, 16-40 px faces, upper or lower occlusion), one
per face with probability ``--corrupt-p``, the kind drawn uniformly or as ``--kind-weight
KIND=W`` weighs it (``motion_blur=4``: blur four times as often as each other kind).

Resumable: the state is saved after every epoch (``last.pt``) and the epoch's permutation and
corruptions come from ``(seed, epoch)``, so a stopped run continues where it stopped. After each
epoch, FER2013 PublicTest: how far the student's clean embeddings moved from the original's
(relative squared distance), and the head's accuracy clean and under motion blur at the
benchmark's severity 3 (15 % of the face width), beside the original's. The last epoch's weights
are exported to ``face_encoder.onnx`` (same inputs and outputs as the original) and checked
against torch with onnxruntime.

    python -m train.face_robust --encoder runs/bundle/face_encoder_seed.onnx \\
        --out runs/faceenc/robust1 --epochs 3

Only plain CNN encoders (Conv, Relu, MaxPool, a global ReduceMean, Gemm; float16-stored
weights cast at load) are read back from ONNX (:func:`cnn_from_onnx`); a torch-trained encoder
of :mod:`train.face_recipe` would start from its checkpoint instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from emosdk.features.face import FaceParams, normalize_face

from . import FER_CLASSES
from .common import blurred, normalise
from .face_model import export_encoder
from .fusion_data import FACE_KINDS, corrupt_face, fer_images, ort_session

logger = logging.getLogger("emosdk.train")


class OnnxCNN(nn.Module):
    """A plain CNN read back from ONNX: ``features`` (Conv / ReLU / MaxPool), the spatial mean,
    ``embed`` (the first Gemm, output ``face_emb``), then ``head`` (ReLU, Gemm: ``face_logits``).
    """

    def __init__(self, features: list[nn.Module], embed: nn.Linear, head: nn.Linear) -> None:
        super().__init__()
        self.features = nn.Sequential(*features)
        self.embed = embed
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.embed(self.features(x).mean(dim=(2, 3)))
        return emb, self.head(torch.relu(emb))


def cnn_from_onnx(path: str | Path) -> OnnxCNN:
    """The torch module of a plain CNN face encoder graph (see :class:`OnnxCNN`).

    Raises:
        ValueError: the graph holds another operator or another layout.
    """
    m = onnx.load(str(path))
    w = {i.name: torch.from_numpy(numpy_helper.to_array(i).astype(np.float32).copy())
         for i in m.graph.initializer}  # fmt: skip
    feats: list[nn.Module] = []
    gemms: list[nn.Linear] = []
    pooled = False
    for n in m.graph.node:
        a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
        if n.op_type == "Cast" and n.input[0] in w:  # float16-stored weights (fp16w graphs)
            w[n.output[0]] = w[n.input[0]]
        elif n.op_type == "Conv" and not pooled:
            k = w[n.input[1]]
            if a.get("group", 1) != 1 or set(a.get("strides", [1, 1])) != {1}:
                raise ValueError(f"{path}: {n.name}: only ungrouped stride-1 convolutions")
            pad = a.get("pads", [0, 0, 0, 0])
            conv = nn.Conv2d(k.shape[1], k.shape[0], tuple(k.shape[2:]), padding=tuple(pad[:2]),
                             bias=len(n.input) > 2)  # fmt: skip
            conv.weight.data.copy_(k)
            if len(n.input) > 2:
                conv.bias.data.copy_(w[n.input[2]])
            feats.append(conv)
        elif n.op_type == "Relu":
            if not pooled:
                feats.append(nn.ReLU())
        elif n.op_type == "MaxPool" and not pooled:
            feats.append(nn.MaxPool2d(tuple(a["kernel_shape"]), tuple(a["strides"])))
        elif n.op_type == "ReduceMean":
            pooled = True
        elif n.op_type == "Gemm" and pooled:
            if a.get("transB", 0) != 1:
                raise ValueError(f"{path}: {n.name}: Gemm without transB")
            k = w[n.input[1]]
            lin = nn.Linear(k.shape[1], k.shape[0])
            lin.weight.data.copy_(k)
            lin.bias.data.copy_(w[n.input[2]])
            gemms.append(lin)
        else:
            raise ValueError(f"{path}: {n.op_type} ({n.name}) is not a plain CNN layer here")
    if len(gemms) != 2:
        raise ValueError(f"{path}: expected two Gemm layers (embedding, head), found {len(gemms)}")
    return OnnxCNN(feats, gemms[0], gemms[1])


def kind_weights(specs: list[str]) -> np.ndarray:
    """Drawing probabilities over :data:`FACE_KINDS` from ``KIND=WEIGHT`` items (the kinds not
    named weigh 1).

    Raises:
        ValueError: an unknown kind, a malformed item or a negative weight.
    """
    w = np.ones(len(FACE_KINDS))
    for spec in specs:
        kind, sep, val = spec.partition("=")
        if not sep or kind not in FACE_KINDS:
            raise ValueError(
                f"--kind-weight {spec!r}: expected KIND=WEIGHT, KIND one of {FACE_KINDS}"
            )
        try:
            w[FACE_KINDS.index(kind)] = float(val)
        except ValueError:
            raise ValueError(f"--kind-weight {spec!r}: {val!r} is not a number") from None
        if w[FACE_KINDS.index(kind)] < 0:
            raise ValueError(f"--kind-weight {spec!r}: weights must be >= 0")
    if w.sum() <= 0:
        raise ValueError("--kind-weight: at least one kind needs a positive weight")
    return w / w.sum()


def corrupted(imgs: np.ndarray, p: float, rng: np.random.Generator, fp: FaceParams,
              weights: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Normalised faces (N, 1, S, S), each with one random training-side corruption w.p. ``p``
    (a shrunk face is passed small, and :func:`normalize_face` scales it as the runtime does);
    the kind drawn uniformly, or with ``weights`` (see :func:`kind_weights`)."""
    out = normalise(imgs, fp)
    for i in np.flatnonzero(rng.random(len(imgs)) < p):
        if weights is None:
            kind = FACE_KINDS[int(rng.integers(len(FACE_KINDS)))]
        else:
            kind = FACE_KINDS[int(rng.choice(len(FACE_KINDS), p=weights))]
        y, _ = corrupt_face(imgs[i], kind, rng)
        out[i] = normalize_face(y, fp)
    return out


def encode(model: nn.Module, x: np.ndarray, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    embs, logits = [], []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            e, lg = model(torch.from_numpy(x[s : s + batch]))
            embs.append(e.numpy())
            logits.append(lg.numpy())
    return np.concatenate(embs), np.concatenate(logits)


def figures(model: nn.Module, x: np.ndarray, xb: np.ndarray, y7: np.ndarray, te: np.ndarray,
            var: float) -> dict:  # fmt: skip
    """PublicTest figures of one encoder (see the module docstring): ``x`` / ``xb`` the clean and
    blurred faces normalised, ``te`` the original's clean embeddings."""
    e, lg = encode(model, x)
    eb, lgb = encode(model, xb)
    return {
        "clean_accuracy": float((lg.argmax(1) == y7).mean()),
        "blur_s3_accuracy": float((lgb.argmax(1) == y7).mean()),
        "clean_shift": float(((e - te) ** 2).sum(1).mean() / var),
        "blur_s3_distance": float(((eb - te) ** 2).sum(1).mean() / var),
    }


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", type=Path, required=True, help="the face encoder ONNX to harden")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--face-params", type=Path, help="a model.json whose `face` to use "
                   "(default: the bundled default model's)")  # fmt: skip
    p.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2]
                   / "shared" / "data")  # fmt: skip
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--corrupt-p", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help=">0: faces per class (smoke runs)")
    p.add_argument("--kind-weight", action="append", default=[], metavar="KIND=W",
                   help="draw this corruption kind W times as often as an unnamed one "
                   f"(repeatable; kinds: {', '.join(FACE_KINDS)})")  # fmt: skip
    args = p.parse_args(argv)
    try:
        weights = kind_weights(args.kind_weight) if args.kind_weight else None
    except ValueError as e:
        p.error(str(e))
    command = "python -m train.face_robust " + " ".join(shlex.quote(a) for a in argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    meta_path = args.face_params or (
        Path(__file__).resolve().parents[1] / "sdk/emosdk/models/bundled/default/model.json"
    )
    fp = FaceParams(**json.loads(meta_path.read_text())["face"])
    teacher = cnn_from_onnx(args.encoder).eval()
    for q in teacher.parameters():
        q.requires_grad_(False)
    # the read-back module must be the graph: checked on random faces
    probe = np.random.default_rng(0).standard_normal((4, 1, fp.size, fp.size)).astype(np.float32)
    sess = ort_session(args.encoder, args.threads)
    ref = sess.run(None, {sess.get_inputs()[0].name: probe})
    got = encode(teacher, probe)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
    if diff > 1e-4:
        raise SystemExit(f"{args.encoder}: the torch read-back differs from the graph by {diff}")
    student = cnn_from_onnx(args.encoder)

    imgs, _ = fer_images("Training", args.data_root, args.limit)
    x_all = normalise(imgs, fp)
    x_flip = x_all[..., ::-1].copy()
    t_all, _ = encode(teacher, x_all)
    t_flip, _ = encode(teacher, x_flip)
    var = float(t_all.var(0).sum())
    n = len(imgs)
    per_epoch = n // args.batch
    total = per_epoch * args.epochs
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    start = 0
    last = out / "last.pt"
    log: list[dict] = []
    if last.is_file():
        st = torch.load(last, weights_only=False)
        student.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        start, log = st["epoch"], st["log"]
        logger.info("resumed %s after epoch %d of %d", out, start, args.epochs)
    # PublicTest with FER's seven classes for the head (surprise included); the frozen
    # original's figures once
    pt_imgs, pt_y7 = fer_images("PublicTest", args.data_root, args.limit, FER_CLASSES)
    x_pt, xb_pt = normalise(pt_imgs, fp), normalise(blurred(pt_imgs), fp)
    te_pt, _ = encode(teacher, x_pt)
    original = figures(teacher, x_pt, xb_pt, pt_y7, te_pt, var)

    def evaluate() -> dict:
        return {"student": figures(student, x_pt, xb_pt, pt_y7, te_pt, var), "original": original}

    if start == 0:
        log.append({"epoch": 0, **evaluate()})
        logger.info("epoch 0: %s", json.dumps(log[-1]))
    t0 = time.time()
    for epoch in range(start, args.epochs):
        rng = np.random.default_rng([args.seed, epoch])
        perm = rng.permutation(n)
        student.train()
        run_loss = 0.0
        for b in range(per_epoch):
            idx = perm[b * args.batch : (b + 1) * args.batch]
            flip = rng.random(len(idx)) < 0.5
            xb = corrupted(imgs[idx], args.corrupt_p, rng, fp, weights)
            xb[flip] = xb[flip][..., ::-1]
            xc = np.where(flip[:, None, None, None], x_flip[idx], x_all[idx])
            tgt = torch.from_numpy(np.where(flip[:, None], t_flip[idx], t_all[idx]))
            e_bad, _ = student(torch.from_numpy(np.ascontiguousarray(xb)))
            e_clean, _ = student(torch.from_numpy(np.ascontiguousarray(xc)))
            loss = (((e_bad - tgt) ** 2).sum(1).mean() + ((e_clean - tgt) ** 2).sum(1).mean()) / var
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            run_loss += loss.item()
            if (b + 1) % 50 == 0:
                logger.info("epoch %d step %d/%d loss %.4f (%.0f s)", epoch + 1, b + 1,
                            per_epoch, run_loss / (b + 1), time.time() - t0)  # fmt: skip
        log.append({"epoch": epoch + 1, "loss": run_loss / per_epoch,
                    **evaluate()})  # fmt: skip
        logger.info("epoch %d: %s", epoch + 1, json.dumps(log[-1]))
        torch.save({"model": student.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "epoch": epoch + 1, "log": log}, last)  # fmt: skip
    onnx_path = export_encoder(student, out / "face_encoder.onnx", fp.size)
    summary = {
        "command": command,
        "encoder": str(args.encoder),
        "faces": int(n),
        "embedding_variance": var,
        "log": log,
        "onnx": str(onnx_path),
        "wall_s": round(time.time() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(log[-1]))
    return summary


if __name__ == "__main__":
    main()
