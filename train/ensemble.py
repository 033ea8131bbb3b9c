"""Average the class probabilities of trained runs, per CREMA-D partition, and report the
ensemble in the format of ``python -m train.sweep`` (so ``train.report`` renders it).

A member is a run-folder prefix: ``runs/audio/emosdk_audio_s0`` means the folders
``runs/audio/emosdk_audio_s0_p1`` .. ``_p5``. Each folder holds ``logits.npz`` (written by
``train.train`` and ``train.train_audio``: ``Test_names``, ``Test_y``, ``Test_logits_<condition>``).
The ensemble's prediction for a clip is the argmax of the mean of the members' softmax
probabilities; members must hold the same Test clips in the same order (checked by name).

    python -m train.ensemble --name audio_ens --condition audio_only --out-runs runs/ens \\
        --members runs/audio/emosdk_audio_s0,runs/audio/emosdk_audio_s1,runs/sweep/unimodal_audio \\
        --out-json docs/results/crema_audio_ensemble.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from emosdk.metrics import classification_report
from emosdk.scores import softmax

from . import LABELS
from .sweep import aggregate

REAL_AUDIO = "CREMA-D Test audio only (real data)"


def audio_metrics(model: str, partition: int, command: str, y, pred, extra: dict) -> dict:
    """A Test report of audio-only predictions in train.sweep's test_metrics.json format."""
    return {
        "model": model,
        "partition": partition,
        "split": "Test",
        "command": command,
        "synthetic_pairs": False,
        "note": REAL_AUDIO,
        **extra,
        "conditions": {
            "audio_only": {"data": REAL_AUDIO, **classification_report(y, pred, LABELS)}
        },
        "masking": {"curves": {}},
    }


def member_probs(
    folder: Path, split: str, condition: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(names, labels, softmax probabilities) of one run folder's ``split`` logits."""
    path = folder / "logits.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no logits (train the run, or re-run train.train --evaluate-only)"
        )
    with np.load(path) as z:
        key = f"{split}_logits_{condition}"
        if key not in z.files:
            raise KeyError(f"{path} has no {key!r} (has {sorted(z.files)})")
        return z[f"{split}_names"], z[f"{split}_y"], softmax(z[key])


def ensemble_partition(
    members: list[str], partition: int, condition: str = "audio_only", split: str = "Test"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(names, labels, mean probabilities) of the members' runs on one partition."""
    loaded = [member_probs(Path(f"{m}_p{partition}"), split, condition) for m in members]
    names, y, _ = loaded[0]
    for m, (n, yy, _) in zip(members, loaded, strict=True):
        if not (np.array_equal(n, names) and np.array_equal(yy, y)):
            raise ValueError(
                f"partition {partition}: {m} holds other {split} clips than {members[0]}"
            )
    return names, y, np.mean([p for _, _, p in loaded], 0)


def write_ensemble(
    name: str, members: list[str], partitions: list[int], out_runs: Path, command: str,
    condition: str = "audio_only",
) -> dict:  # fmt: skip
    """test_metrics.json (and probs.npz) of the ensemble for every partition where all members
    exist -> ``out_runs/name_pP``; returns train.sweep's aggregate over those partitions."""
    done, dev_scores = [], []
    for part in partitions:
        if not all((Path(f"{m}_p{part}") / "logits.npz").is_file() for m in members):
            continue
        names, y, probs = ensemble_partition(members, part, condition)
        out = out_runs / f"{name}_p{part}"
        out.mkdir(parents=True, exist_ok=True)
        extra = {
            "members": [f"{m}_p{part}" for m in members],
            "ensemble": f"mean of the members' softmax probabilities ({condition} logits)",
        }
        try:  # the Development figure, on which ensembles are compared
            _, y_dev, p_dev = ensemble_partition(members, part, condition, "Development")
        except KeyError:
            pass
        else:
            dev = classification_report(y_dev, p_dev.argmax(-1), LABELS)
            extra["dev"] = {k: dev[k] for k in ("macro_f1", "micro_f1", "uar")}
            dev_scores.append(extra["dev"])
        tm = audio_metrics(name, part, command, y, probs.argmax(-1), extra)
        (out / "test_metrics.json").write_text(json.dumps(tm, indent=2))
        np.savez(out / "probs.npz", Test_names=names, Test_y=y, Test_probs=probs)
        done.append(part)
    res = aggregate(out_runs, [name], done)
    if done and len(dev_scores) == len(done):
        res["models"][name]["development"] = {
            k: float(np.mean([d[k] for d in dev_scores])) for k in ("macro_f1", "micro_f1")
        }
    return res


def summary_line(name: str, r: dict) -> str:
    """One JSON line of an aggregated model: audio-only micro-/macro-F1 mean, std and values
    over the partitions (and the Development means, when known)."""
    line = {"model": name, "partitions": r["partitions"]}
    if "development" in r:
        line |= {f"dev_{k}": round(v, 4) for k, v in r["development"].items()}
    for k in ("micro_f1", "macro_f1"):
        c = r["conditions"]["audio_only"][k]
        line |= {k: round(c["mean"], 4), f"{k}_std": round(c["std"], 4)}
        line[f"{k}_values"] = [round(v, 4) for v in c["values"]]
    return json.dumps(line)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", required=True, help="comma-separated run-folder prefixes")
    p.add_argument("--name", required=True, help="the ensemble's run name")
    p.add_argument("--out-runs", type=Path, required=True, help="where NAME_pP folders go")
    p.add_argument("--partitions", default="1,2,3,4,5")
    p.add_argument("--condition", default="audio_only", help="which logits to average")
    p.add_argument("--out-json", type=Path)
    args = p.parse_args(argv)
    command = "python -m train.ensemble " + " ".join(argv if argv is not None else sys.argv[1:])
    members = [m for m in args.members.split(",") if m]
    if args.condition != "audio_only":
        p.error("only audio_only ensembles are reported (the other conditions use synthetic pairs)")
    parts = [int(x) for x in args.partitions.split(",") if x]
    res = write_ensemble(args.name, members, parts, args.out_runs, command, args.condition)
    if not res["models"]:
        raise SystemExit(f"no partition has logits.npz for every member of {members}")
    res["command"] = command
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(res, indent=2))
    print(summary_line(args.name, res["models"][args.name]))
    return res


if __name__ == "__main__":
    main()
