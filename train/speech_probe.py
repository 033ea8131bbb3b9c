"""Frozen Whisper tiny.en probes on CREMA-D: pooled layer features + logistic regression.

Each clip goes through the frozen encoder once; every hidden state (the stem after the two
convolutions and positions, blocks 1-4, the final LayerNorm) is pooled over time (mean and
standard deviation, 768 values per layer). A multinomial logistic regression (L2, ``C`` chosen on
Development macro-F1 from a grid) is fitted on Train per partition and per feature set, and
scored on Test.

``--input clip`` feeds the clip alone (no padding; issue 16's probe table); ``--input window``
feeds what ``Recognizer.predict`` feeds the audio encoder (a shorter clip centred in 3 s of
zeros, a longer one whole; the fine-tuned models are scored on the same windows).

    python -m train.speech_probe --partitions 1 --input clip --out runs/speech/probe
    python -m train.speech_probe --partitions 1 2 3 4 5 --input window --out runs/speech/probe

Writes ``probe_<input>.json`` (per partition, per feature set: Dev and Test macro-F1, accuracy)
into ``--out``; pooled features are cached there, so a rerun is quick.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emosdk.metrics import classification_report

from . import LABELS
from .speech_data import cremad_partition, features, load_pcm, predict_window
from .whisper import load_encoder

logger = logging.getLogger("emosdk.train")

LAYER_NAMES = ("stem", "block1", "block2", "block3", "block4", "final_ln")
C_GRID = tuple(float(c) for c in np.logspace(-3, 1, 9))


def pooled_features(
    names: list[str],
    pcm: dict[str, np.ndarray],
    how: str,
    cache: Path,
    every: int = 250,
) -> dict[str, np.ndarray]:
    """Mean and std over time of each layer, (6, 768) float32 per clip; cached and resumable."""
    done: dict[str, np.ndarray] = {}
    if cache.exists():
        with np.load(cache) as z:
            done = dict(zip(z["names"].tolist(), z["feats"]))
    todo = [n for n in names if n not in done]
    if todo:
        enc = load_encoder()
        t0 = time.time()
        for i, n in enumerate(todo):
            x = pcm[n] if how == "clip" else predict_window(pcm[n])
            mel = torch.from_numpy(features(x))[None]
            with torch.no_grad():
                hs = enc.layers(mel)
            done[n] = torch.stack(
                [torch.cat([h[0].mean(0), h[0].std(0)]) for h in hs]
            ).numpy()  # (6, 768)
            if (i + 1) % every == 0 or i + 1 == len(todo):
                keys = sorted(done)
                tmp = cache.with_suffix(".tmp.npz")
                np.savez(tmp, names=np.array(keys), feats=np.stack([done[k] for k in keys]))
                tmp.replace(cache)
                rate = (time.time() - t0) / (i + 1)
                logger.info("pooled %d/%d clips (%.0f ms each)", i + 1, len(todo), rate * 1e3)
    return done


def fit_logreg(
    x: np.ndarray, y: np.ndarray, c: float, n_classes: int, init: torch.nn.Linear | None = None
) -> torch.nn.Linear:
    """Multinomial logistic regression with sklearn's objective: C * sum(CE) + ||W||^2 / 2.

    ``init`` warm-starts from another fit (the optimum is unique, so only the time changes).
    """
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    lin = torch.nn.Linear(x.shape[1], n_classes, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(init.weight if init is not None else torch.zeros_like(lin.weight))
        lin.bias.copy_(init.bias if init is not None else torch.zeros_like(lin.bias))
    opt = torch.optim.LBFGS(lin.parameters(), lr=1, max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(lin(xt), yt) + lin.weight.pow(2).sum() / (2 * c * len(y))
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def probe(
    feats: dict[str, np.ndarray], partition: int, layer_sets: dict[str, list[int]]
) -> dict[str, dict]:
    """Per feature set: C chosen on Development macro-F1, Dev and Test figures."""
    utts = cremad_partition(partition)
    split = {s: [u for u in utts if u.split == s] for s in ("Train", "Development", "Test")}
    y = {s: np.array([u.label for u in v]) for s, v in split.items()}
    out = {}
    for set_name, layers in layer_sets.items():
        x = {
            s: np.stack([feats[u.name][layers].reshape(-1) for u in v]).astype(np.float64)
            for s, v in split.items()
        }
        mu, sd = x["Train"].mean(0), x["Train"].std(0) + 1e-8
        x = {s: (v - mu) / sd for s, v in x.items()}
        best, lin = None, None
        for c in C_GRID:  # increasing C: each fit starts from the previous, more regular one
            lin = fit_logreg(x["Train"], y["Train"], c, len(LABELS), lin)
            with torch.no_grad():
                pred = {s: lin(torch.from_numpy(x[s])).argmax(-1).numpy() for s in x}
            dev = classification_report(y["Development"], pred["Development"], LABELS)
            if best is None or dev["macro_f1"] > best[0]:
                test = classification_report(y["Test"], pred["Test"], LABELS)
                best = (dev["macro_f1"], c, dev, test)
        _, c, dev, test = best
        out[set_name] = {
            "C": c,
            "dev_macro_f1": dev["macro_f1"],
            "dev_accuracy": dev["accuracy"],
            "test_macro_f1": test["macro_f1"],
            "test_accuracy": test["accuracy"],
            "test_n": test["n"],
        }
        logger.info(
            "partition %d %-9s C=%.3g dev %.3f test macro-F1 %.3f acc %.3f",
            partition,
            set_name,
            c,
            dev["macro_f1"],
            test["macro_f1"],
            test["accuracy"],
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--partitions", type=int, nargs="+", default=[1])
    p.add_argument("--input", choices=["clip", "window"], default="clip")
    p.add_argument("--sets", nargs="+", default=[*LAYER_NAMES, "all"])
    p.add_argument("--out", type=Path, default=Path("runs/speech/probe"))
    p.add_argument("--cache-dir", type=Path, default=Path("runs/speech/cache"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    utts = {u.name: u for part in args.partitions for u in cremad_partition(part)}
    names = sorted(utts)
    pcm = load_pcm(list(utts.values()), args.cache_dir)
    feats = pooled_features(names, pcm, args.input, args.out / f"pooled_{args.input}.npz")
    sets = {s: ([*range(6)] if s == "all" else [LAYER_NAMES.index(s)]) for s in args.sets}
    path = args.out / f"probe_{args.input}.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result.setdefault("partitions", {})
    for part in args.partitions:
        result["partitions"][str(part)] = probe(feats, part, sets)
    parts = result["partitions"]
    result["mean"] = {
        s: {
            k: float(np.mean([parts[q][s][k] for q in parts if s in parts[q]]))
            for k in ("test_macro_f1", "test_accuracy")
        }
        for s in sets
    }
    result["partitions_in_mean"] = sorted(parts)
    result["command"] = "python -m train.speech_probe " + " ".join(argv or sys.argv[1:])
    result["input"] = args.input
    path.write_text(json.dumps(result, indent=2) + "\n")
    logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
