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

from .common import summary_line, write_ensemble


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
