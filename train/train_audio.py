"""Train the bundle's audio encoder (train.models.AudioEncoder over the runtime's log-mel) alone on
CREMA-D partitions and seeds, then report single models and the seed ensemble per partition.

Each (partition, seed) run is the seed pipeline's audio stage (:func:`train.common.audio_stage`
with train_seed's widths): random 3 s crops, gain / time / frequency masking, inverse-sqrt class
weights, label smoothing 0.1, AdamW with warmup + cosine, selection on
Development macro-F1. Runs are resumable (``RUNS/NAME_sS_pP/audio_last.pt``) and skipped when
finished. The ensemble averages the seeds' class probabilities (softmax) on each clip
(:func:`train.common.write_ensemble`; ``python -m train.ensemble`` also combines runs of
different models).

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
from emosdk.models.bundle import StreamParams

from . import data as D
from .common import (
    AudioStageConfig,
    aggregate,
    audio_metrics,
    audio_stage,
    log_json,
    save_logits,
    summary_line,
    write_ensemble,
)


def train_one(args, partition: int, seed: int, out: Path, command: str) -> None:
    """Train (or resume) one run; write logits.npz and test_metrics.json into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(seed)
    root = Path(args.data_root)
    cache = Path(args.cache_dir) if args.cache_dir and not args.limit else None
    audio_p, stream_p = LogMelParams(), StreamParams()
    frames = audio_p.num_frames(int(round(stream_p.window_s * audio_p.sample_rate)))  # 298
    floor = float(np.log(audio_p.log_floor))
    clips = D.load_cremad_partition(partition, root)
    split = {s: [c for c in clips if c.split == s] for s in ("Train", "Development", "Test")}
    if args.limit:
        split = {s: v[: args.limit] for s, v in split.items()}
    feats = D.logmel_cache(
        [c.name for v in split.values() for c in v], audio_p, root, cache_dir=cache
    )
    y = {s: np.array([c.label for c in v], np.int64) for s, v in split.items()}
    counts = {s: len(v) for s, v in split.items()}
    log_json(out, stage="data", partition=partition, seed=seed, cremad=counts)
    gen = torch.Generator().manual_seed(seed)
    cfg = AudioStageConfig(seed=seed, max_steps=args.max_steps, epochs=args.epochs)
    st = audio_stage(cfg, out, split, feats, y, audio_p, frames, floor, gen)
    for s, z in st.logits.items():
        save_logits(out / "logits.npz", s, [c.name for c in split[s]], y[s], {"audio_only": z})
    extra = {
        "seed": seed,
        "selected": {"epoch": st.result["selected_epoch"], **st.result["selection"]},
        "params": st.final["params"],
    }
    pred = st.logits["Test"].argmax(-1)
    tm = audio_metrics(f"{args.name}_s{seed}", partition, command, y["Test"], pred, extra)
    (out / "test_metrics.json").write_text(json.dumps(tm, indent=2))


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
    res = aggregate(args.runs, models, parts)
    if len(seeds) > 1:
        ens = f"{args.name}_ens{len(seeds)}"
        members = [str(args.runs / m) for m in models]
        res["models"] |= write_ensemble(ens, members, parts, args.runs, command)["models"]
    res["command"] = command
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(res, indent=2))
    for name, r in res["models"].items():
        print(summary_line(name, r))
    return res


if __name__ == "__main__":
    main()
