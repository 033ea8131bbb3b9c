"""Train paper models on CREMA-D partitions 1..5 in turn, then aggregate their Test metrics.

    python -m train.sweep --models auxformer,vavl,mult --runs /tmp/emosdk_runs \\
        --out-json results.json --out-md results.md --plot masking.png -- --device auto

Each run is ``python -m train.train --model M --partition P --out RUNS/M_pP [train args]``; runs
with a test_metrics.json are skipped, runs with a last.pt are resumed. The aggregate gives, per
model and condition, the mean and the sample standard deviation (ddof=1) over the partitions found.
Figures with a face come from SYNTHETIC PAIRS (CREMA-D voice + FER2013 face of the same label).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from .common import aggregate

CONDS = ("av", "audio_only", "video_only")


ROOT = Path(__file__).resolve().parents[1]


def run_all(models: list[str], partitions: list[int], runs: Path, train_args: list[str]) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for model in models:
        for p in partitions:
            out = (runs / f"{model}_p{p}").resolve()
            if (out / "test_metrics.json").is_file():
                print(f"skip {out}: finished", flush=True)
                continue
            cmd = [sys.executable, "-m", "train.train", "--model", model, "--partition", str(p)]
            cmd += ["--out", str(out), *train_args]
            if (out / "last.pt").is_file():
                cmd.append("--resume")
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT, env=env)


def markdown(res: dict) -> str:
    """Models as rows; macro-F1 and micro-F1 mean ± std per condition."""

    def cell(r: dict, c: str, k: str) -> str:
        if c not in r["conditions"]:
            return "–"
        m = r["conditions"][c][k]
        return f"{m['mean']:.3f} ± {m['std']:.3f}"

    head = ["model", "partitions"]
    head += [f"{c} {k}" for c in CONDS for k in ("macro-F1", "micro-F1")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in res["models"].items():
        row = [name, ",".join(map(str, r["partitions"]))]
        row += [cell(r, c, k) for c in CONDS for k in ("macro_f1", "micro_f1")]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "av and video_only: SYNTHETIC PAIRS (CREMA-D Test voice + FER2013 PublicTest face of the "
        "same label); audio_only: real CREMA-D Test audio. Mean ± sample std over partitions."
    )
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> Path:
    """Micro-F1 against the share of frames kept of the masked modality, one panel per masked
    modality, as in the journal AuxFormer's Figure 5 (PNG)."""
    import cv2

    from emosdk.plots import plot_curves

    panels = []
    for kind in ("audio", "video", "both"):
        series = {
            # a model without this curve keeps its slot, so it has one colour in every panel
            name: [
                (round(1 - pt["masked"], 1), pt["micro_f1"]["mean"]) for pt in r["masking"][kind]
            ]
            if kind in r["masking"]
            else []
            for name, r in res["models"].items()
        }
        if any(series.values()):
            tmp = path.with_name(f".{path.stem}_{kind}.png")
            what = "audio+video" if kind == "both" else kind
            title = f"{what} frames masked (synthetic pairs)"
            plot_curves(series, tmp, title, "share of frames kept", "micro-F1")
            panels.append(cv2.imread(str(tmp)))
            tmp.unlink()
    if not panels:
        raise SystemExit("no masking curves to plot")
    cv2.imwrite(str(path), np.vstack(panels))
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="auxformer,auxformer_deploy,vavl,mult,parthasarathy")
    p.add_argument("--partitions", default="1,2,3,4,5")
    p.add_argument("--runs", type=Path, default=Path("/tmp/emosdk_runs"))
    p.add_argument("--out-json", type=Path, default=Path("/tmp/emosdk_runs/results.json"))
    p.add_argument("--out-md", type=Path, help="Markdown table (default: --out-json with .md)")
    p.add_argument("--plot", type=Path, help="PNG of the masking curves (default: .png)")
    p.add_argument("--aggregate-only", action="store_true", help="do not train, only aggregate")
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    parts = [int(x) for x in args.partitions.split(",") if x]
    if not args.aggregate_only:
        run_all(models, parts, args.runs, train_args)
    res = aggregate(args.runs, models, parts)
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(res, indent=2))
    md = markdown(res)
    (args.out_md or args.out_json.with_suffix(".md")).write_text(md)
    plot(res, args.plot or args.out_json.with_suffix(".png"))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
