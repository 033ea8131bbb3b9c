"""Tables of docs/results.md in the papers' format, from the aggregated sweep JSON.

    python -m train.sweep --aggregate-only --models auxformer,vavl,unimodal_audio \\
        --runs RUNS --out-json docs/results/crema_sweep.json
    python -m train.report docs/results/crema_sweep.json [more.json ...]

Prints Markdown: (1) CREMA-D audio-only, micro-F1 and macro-F1, mean ± std over the partitions
found, beside the papers' figures; (3) synthetic pairs, AV / audio-only / video-only; the
masking curves (journal AuxFormer Figure 5: micro-F1 against the share of frames kept).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: the papers' CREMA-D figures (micro-F1, macro-F1), means over their runs
PAPERS_AUDIO = [
    ("AuxFormer journal, optimised training, acoustic only (Table 2)", 0.602, 0.592),
    ("AuxFormer journal, unimodal baseline 4, acoustic (Table 2)", 0.585, 0.576),
    ("VAVL, acoustic (wav2vec2 features)", 0.701, 0.628),
]
PAPERS_AV = [
    ("AuxFormer journal, optimised training, AV (Table 1)", 0.773, 0.772),
    ("AuxFormer journal, standard training, AV (Table 1)", 0.769, 0.768),
    ("AuxFormer journal, optimised, visual only (Table 2)", 0.622, 0.615),
]
ROW_NAMES = {
    "unimodal_audio": "unimodal audio baseline (`unimodal_audio`)",
    "auxformer": "AuxFormer, optimised training, tested audio-only (`auxformer`)",
    "vavl": "VAVL acoustic head (`vavl`)",
    "mult": "MulT, tested audio-only (`mult`)",
    "parthasarathy": "Parthasarathy & Sundaram, tested audio-only (`parthasarathy`)",
    "auxformer_deploy": "AuxFormer deploy form, tested audio-only (`auxformer_deploy`)",
    "hussain": "Hussain et al., tested audio-only (`hussain`)",
    "emosdk_audio_s0": "bundle's `AudioEncoder`, 25 epochs, seed 0 (`train_audio`)",
    "emosdk_audio_s1": "bundle's `AudioEncoder`, 25 epochs, seed 1 (`train_audio`)",
    "emosdk_audio_e40_s2": "bundle's `AudioEncoder`, 40 epochs, seed 2 (`train_audio`)",
    "emosdk_audio_ens2": "ensemble of the two 25-epoch `AudioEncoder` seeds",
    "audio_ensemble": "**best: ensemble of the three `AudioEncoder` runs + `unimodal_audio`**",
}


def cell(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def audio_table(res: dict) -> str:
    lines = [
        "| model | partitions | Micro-F1 | Macro-F1 |",
        "|---|---|---|---|",
    ]
    for name, r in res["models"].items():
        c = r["conditions"].get("audio_only")
        if c is None:
            continue
        parts = ",".join(map(str, r["partitions"]))
        lines.append(
            f"| {ROW_NAMES.get(name, name)} | {parts} | {cell(c['micro_f1'])} | "
            f"{cell(c['macro_f1'])} |"
        )
    for label, micro, macro in PAPERS_AUDIO:
        lines.append(f"| *paper:* {label} | 1-5 | {micro:.3f} | {macro:.3f} |")
    return "\n".join(lines)


def av_table(res: dict) -> str:
    head = "| model (SYNTHETIC PAIRS) | partitions | AV Micro-F1 | AV Macro-F1 | audio-only Micro-F1 | audio-only Macro-F1 | video-only Micro-F1 | video-only Macro-F1 |"  # noqa: E501
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for name, r in res["models"].items():
        cs = r["conditions"]
        if "av" not in cs:
            continue
        cells = []
        for c in ("av", "audio_only", "video_only"):
            cells += [cell(cs[c]["micro_f1"]), cell(cs[c]["macro_f1"])]
        parts = ",".join(map(str, r["partitions"]))
        lines.append(f"| `{name}` | {parts} | " + " | ".join(cells) + " |")
    for label, micro, macro in PAPERS_AV:
        lines.append(
            f"| *paper (real CREMA-D video):* {label} | 1-5 | {micro:.3f} | {macro:.3f} |"
            + " |" * 4
        )
    return "\n".join(lines)


def masking_table(res: dict) -> str:
    lines = []
    for kind in ("audio", "video", "both"):
        rows = {n: r["masking"][kind] for n, r in res["models"].items() if kind in r["masking"]}
        if not rows:
            continue
        kept = [round(1 - pt["masked"], 1) for pt in next(iter(rows.values()))]
        lines.append(f"\n{kind} frames masked, micro-F1 by share of frames kept:\n")
        lines.append("| model | " + " | ".join(f"{k:.0%}" for k in kept) + " |")
        lines.append("|---|" + "---|" * len(kept))
        for name, pts in rows.items():
            lines.append(
                f"| `{name}` | " + " | ".join(f"{pt['micro_f1']['mean']:.3f}" for pt in pts) + " |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "sweep_json", type=Path, nargs="+",
        help="written by train.sweep, train.train_audio or train.ensemble (models merged in order)",
    )  # fmt: skip
    args = p.parse_args(argv)
    res = {"models": {}}
    for path in args.sweep_json:
        res["models"] |= json.loads(path.read_text())["models"]
    print("### CREMA-D, audio only (real audio)\n")
    print(audio_table(res))
    print("\n### Synthetic pairs: AV, audio only, video only\n")
    print(av_table(res))
    print("\n### Masked frames (journal Figure 5 protocol, synthetic pairs)")
    print(masking_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
