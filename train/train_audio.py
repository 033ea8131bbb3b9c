"""Train the bundle's audio encoder (train.models.AudioEncoder over the runtime's log-mel) alone on
CREMA-D partitions and seeds, then report single models and the seed ensemble per partition.

Each (partition, seed) run is the seed pipeline's audio stage (train/train_seed.py,
:func:`train.train_seed.audio_stage`): random 3 s crops, gain / time / frequency masking,
inverse-sqrt class weights, label smoothing 0.1, AdamW with warmup + cosine, selection on
Development macro-F1. Runs are resumable (``RUNS/NAME_sS_pP/audio_last.pt``) and skipped when
finished. The ensemble averages the seeds' class probabilities (softmax) on each clip.

Writes, in the format of ``python -m train.sweep`` (so ``train.report`` renders it):
``RUNS/NAME_sS_pP/test_metrics.json`` (one model), ``RUNS/NAME_ensK_pP/test_metrics.json`` (the
K-seed ensemble), and ``--out-json`` with mean ± std over the partitions.

    python -m train.train_audio --runs runs/audio --partitions 1,2,3,4,5 --seeds 0,1,2 \\
        --out-json docs/results/crema_audio.json
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

from emosdk.features.audio import LogMelParams
from emosdk.metrics import classification_report
from emosdk.models.bundle import StreamParams

from . import LABELS
from . import data as D
from .sweep import aggregate
from .train_seed import Config, audio_stage, log_json

NOTE = "CREMA-D Test audio only (real data)"


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_metrics(model: str, partition: int, command: str, y: np.ndarray, pred, extra) -> dict:
    """One run's Test report in train.sweep's format (audio only, no masking curves)."""
    return {
        "model": model,
        "partition": partition,
        "split": "Test",
        "command": command,
        "synthetic_pairs": False,
        "note": NOTE,
        **extra,
        "conditions": {
            "audio_only": {"data": NOTE, **classification_report(y, pred, LABELS)},
        },
        "masking": {"curves": {}},
    }


def train_one(args, partition: int, seed: int, out: Path, command: str) -> None:
    """Train (or resume) one run; write logits.npz and test_metrics.json into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = Config(
        out=str(out),
        data_root=str(args.data_root),
        cache_dir=args.cache_dir,
        partition=partition,
        seed=seed,
        threads=args.threads,
        limit=args.limit,
        max_steps=args.max_steps,
        audio_epochs=args.epochs,
    )
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    root = Path(cfg.data_root)
    cache = Path(cfg.cache_dir) if cfg.cache_dir and not cfg.limit else None
    audio_p, stream_p = LogMelParams(), StreamParams()
    frames = audio_p.num_frames(int(round(stream_p.window_s * audio_p.sample_rate)))  # 298
    floor = float(np.log(audio_p.log_floor))
    clips = D.load_cremad_partition(partition, root)
    split = {s: [c for c in clips if c.split == s] for s in ("Train", "Development", "Test")}
    if cfg.limit:
        split = {s: v[: cfg.limit] for s, v in split.items()}
    feats = D.logmel_cache(
        [c.name for v in split.values() for c in v], audio_p, root, cache_dir=cache
    )
    y = {s: np.array([c.label for c in v], np.int64) for s, v in split.items()}
    counts = {s: len(v) for s, v in split.items()}
    log_json(out, stage="data", partition=partition, seed=seed, cremad=counts)
    gen = torch.Generator().manual_seed(seed)
    st = audio_stage(cfg, out, split, feats, y, audio_p, frames, floor, gen)
    np.savez(
        out / "logits.npz",
        **{f"{s}_logits": st.logits[s] for s in st.logits},
        **{f"{s}_y": y[s] for s in st.logits},
        **{f"{s}_names": np.array([c.name for c in split[s]]) for s in st.logits},
    )
    extra = {
        "seed": seed,
        "selected": {"epoch": st.result["selected_epoch"], **st.result["selection"]},
        "params": st.final["params"],
    }
    tm = test_metrics(
        f"{args.name}_s{seed}", partition, command, y["Test"], st.logits["Test"].argmax(-1), extra
    )
    (out / "test_metrics.json").write_text(json.dumps(tm, indent=2))


def ensemble(args, partition: int, seeds: list[int], command: str) -> Path | None:
    """Mean softmax of the seeds' Test logits -> RUNS/NAME_ensK_pP/test_metrics.json."""
    runs = [args.runs / f"{args.name}_s{s}_p{partition}" / "logits.npz" for s in seeds]
    if not all(r.is_file() for r in runs):
        return None
    loaded = [np.load(r) for r in runs]
    y = loaded[0]["Test_y"]
    for z in loaded[1:]:
        if not np.array_equal(z["Test_names"], loaded[0]["Test_names"]):
            raise SystemExit(f"partition {partition}: runs hold different Test clips")
    probs = {
        s: np.mean([softmax(z[f"{s}_logits"]) for z in loaded], 0) for s in ("Development", "Test")
    }
    dev = classification_report(loaded[0]["Development_y"], probs["Development"].argmax(-1), LABELS)
    out = args.runs / f"{args.name}_ens{len(seeds)}_p{partition}"
    out.mkdir(parents=True, exist_ok=True)
    extra = {
        "seeds": seeds,
        "members": [str(r.parent) for r in runs],
        "ensemble": "mean of the members' softmax probabilities",
        "dev": {k: dev[k] for k in ("macro_f1", "micro_f1", "uar")},
    }
    tm = test_metrics(
        f"{args.name}_ens{len(seeds)}", partition, command, y, probs["Test"].argmax(-1), extra
    )
    (out / "test_metrics.json").write_text(json.dumps(tm, indent=2))
    np.savez(
        out / "probs.npz", Test_probs=probs["Test"], Test_y=y, Test_names=loaded[0]["Test_names"]
    )
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("/tmp/emosdk_runs/audio"))
    p.add_argument("--name", default="emosdk_audio", help="run-name prefix")
    p.add_argument("--partitions", default="1,2,3,4,5")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", type=Path, default=D.DATA_ROOT)
    p.add_argument("--cache-dir", default=str(D.CACHE_DIR), help='"" = no cache')
    p.add_argument("--limit", type=int, default=0, help=">0: smoke run, N clips per split")
    p.add_argument("--max-steps", type=int, default=0, help=">0: stop each run after N batches")
    p.add_argument("--out-json", type=Path, help="aggregate: mean ± std over the partitions")
    p.add_argument("--aggregate-only", action="store_true", help="do not train")
    args = p.parse_args(argv)
    command = "python -m train.train_audio " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    parts = [int(x) for x in args.partitions.split(",") if x]
    seeds = [int(x) for x in args.seeds.split(",") if x]
    if not args.aggregate_only:
        for part in parts:
            for seed in seeds:
                out = args.runs / f"{args.name}_s{seed}_p{part}"
                if (out / "test_metrics.json").is_file():
                    print(f"skip {out}: finished", flush=True)
                    continue
                train_one(args, part, seed, out, command)
    models = [f"{args.name}_s{s}" for s in seeds]
    if len(seeds) > 1:
        for part in parts:
            ensemble(args, part, seeds, command)
        models.append(f"{args.name}_ens{len(seeds)}")
    res = aggregate(args.runs, models, parts)
    res["command"] = command
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(res, indent=2))
    for name, r in res["models"].items():
        c = r["conditions"]["audio_only"]
        print(
            json.dumps(
                {
                    "model": name,
                    "partitions": r["partitions"],
                    "micro_f1": round(c["micro_f1"]["mean"], 4),
                    "micro_f1_std": round(c["micro_f1"]["std"], 4),
                    "macro_f1": round(c["macro_f1"]["mean"], 4),
                    "macro_f1_std": round(c["macro_f1"]["std"], 4),
                }
            )
        )
    return res


if __name__ == "__main__":
    main()
