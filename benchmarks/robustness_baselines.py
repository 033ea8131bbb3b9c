"""The robustness baselines of a model (issue 15): ``emosdk-bench robustness`` on the real sets,
JSON and PNG into benchmarks/results/, and the markdown table of docs/robustness.md.

    python benchmarks/robustness_baselines.py --tag default --work runs/robust
    python benchmarks/robustness_baselines.py --tag default --only cremad_p1     # one set
    python benchmarks/robustness_baselines.py --tag default --table-only         # the table

Sets: CREMA-D partition 1 Test (899 clips, audio), FER2013 PublicTest (3,589 faces; surprise is
skipped, 3,174 scored), CK+ (the 48 px faces of ../shared/data/ckplus48; contempt and surprise
skipped), and the six real CREMA-D audio-visual clips shipped in emosdk.samples (both modalities
with ``--modality av``, and each alone; the audio run adds the six audio-only clips).

Each run keeps a per-file cache in ``--work`` (rerunning resumes) and runs one ONNX Runtime
thread. The FER2013 manifest is ordered class-stratified (seed 0), so that a run stopped early
(``--limit``) is still a stratified sample.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
SAMPLES = REPO / "sdk" / "emosdk" / "samples" / "manifest.csv"


def manifests(work: Path) -> dict[str, tuple[Path, str]]:
    """set name -> (manifest, modality); the CREMA-D and FER2013 manifests are written once."""
    work.mkdir(parents=True, exist_ok=True)
    cremad = work / "cremad_p1_test.csv"
    if not cremad.is_file():
        subprocess.run(
            [sys.executable, str(REPO / "tools" / "make_manifest.py"), "cremad", "--partition",
             "1", "--split", "Test", "--out", str(cremad)],
            check=True,
        )  # fmt: skip
    fer = work / "fer2013_publictest.csv"
    if not fer.is_file():
        rows = [r for r in csv.DictReader(open(DATA / "fer2013" / "manifest.csv"))
                if r["usage"] == "PublicTest"]  # fmt: skip
        by: dict[str, list[dict]] = {}
        for r in rows:
            by.setdefault(r["label"], []).append(r)
        order = []
        for label, rs in sorted(by.items()):
            random.Random(f"0-{label}").shuffle(rs)
            order += [((k + 0.5) / len(rs), label, r) for k, r in enumerate(rs)]
        order.sort(key=lambda t: (t[0], t[1]))  # classes interleaved in proportion
        with open(fer, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "label", "speaker"])
            w.writerows([str(DATA / "fer2013" / r["file"]), r["label"], ""] for _, _, r in order)
    return {
        "cremad_p1": (cremad, "audio"),
        "clips_av": (SAMPLES, "av"),
        "clips_audio": (SAMPLES, "audio"),
        "clips_video": (SAMPLES, "video"),
        "ckplus": (DATA / "ckplus48" / "manifest.csv", "video"),
        "fer2013_publictest": (fer, "video"),
    }


def run(name: str, manifest: Path, modality: str, tag: str, model: str, work: Path) -> int:
    from emosdk.bench import main

    stem = f"robustness_{tag}_{name}"
    return main(
        ["robustness", "--model", model, "--manifest", str(manifest), "--modality", modality,
         "--threads", "1", "--seed", "0", "--progress", "--cache", str(work / f"{stem}.jsonl"),
         "--out", str(RESULTS / f"{stem}.json"), "--plots", str(RESULTS)]
    )  # fmt: skip


def quality_split(d: dict) -> dict | None:
    """Accuracy of the results marked reliable and of those marked unreliable, pooled over every
    corruption and severity of a robustness JSON (issue 15, point 3); None without both kinds."""
    tot = {"reliable": [0, 0.0], "unreliable": [0, 0.0]}
    for cells in d["cells"].values():
        for cell in cells.values():
            for k, v in (cell.get("by_quality") or {}).items():
                if k in tot and v.get("n") and v.get("accuracy") is not None:
                    tot[k][0] += v["n"]
                    tot[k][1] += v["n"] * v["accuracy"]
    n = tot["reliable"][0] + tot["unreliable"][0]
    if not tot["reliable"][0] or not tot["unreliable"][0]:
        return None
    out = {k: {"n": c, "share": c / n, "accuracy": s / c} for k, (c, s) in tot.items()}
    return {**out, "gap": out["reliable"]["accuracy"] - out["unreliable"]["accuracy"]}


def table(tag: str) -> str:
    """Markdown: per set, macro-F1 per corruption and severity and the ratio to clean."""
    out = []
    for path in sorted(RESULTS.glob(f"robustness_{tag}_*.json")):
        d = json.loads(path.read_text())
        c = d["clean"]
        sevs = [str(s) for s in d["severities"]]
        out.append(
            f"**{path.name}** ({d['bundle']['name']} {d['bundle']['version']}, "
            f"--modality {d['modality']}, n = {d['n_files']}): clean accuracy "
            f"{c['accuracy']:.3f}, macro-F1 {c['macro_f1']:.3f}\n"
        )

        def f2(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        out.append("| " + " | ".join(["corruption", *(f"s{s}" for s in sevs), "s3 / clean",
                                      "mean / clean"]) + " |")  # fmt: skip
        out.append("|---" * (len(sevs) + 3) + "|")
        for n, cells in d["cells"].items():
            s3 = cells.get("3", {}).get("relative_macro_f1")
            row = [n, *(f"{cells[s]['macro_f1']:.3f}" for s in sevs), f2(s3)]
            out.append("| " + " | ".join([*row, f2(d["summary"][n]["relative_macro_f1"])]) + " |")
        for g, m in d["mean"].items():
            if g != "all" or len(d["mean"]) > 2:  # "all" repeats a lone modality
                row = [f"mean ({g})", *([""] * (len(sevs) + 1)), f2(m["mean_relative_macro_f1"])]
                out.append("| " + " | ".join(row) + " |")
        q = quality_split(d)
        if q is not None:
            out.append(
                f"\nQuality verdicts over every corrupted cell: reliable-marked "
                f"{q['reliable']['accuracy']:.3f} accuracy ({q['reliable']['n']} results, "
                f"{100 * q['reliable']['share']:.0f} %), unreliable-marked "
                f"{q['unreliable']['accuracy']:.3f} ({q['unreliable']['n']}): "
                f"{100 * q['gap']:.1f} points apart."
            )
        out.append("")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tag", default="default", help="names the result files")
    p.add_argument("--model", default="default")
    p.add_argument("--work", type=Path, default=Path("/tmp/emosdk_robustness"))
    p.add_argument("--only", nargs="+", help="set names (default: all)")
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args()
    if not args.table_only:
        sets = manifests(args.work)
        for name in args.only or list(sets):
            manifest, modality = sets[name]
            if run(name, manifest, modality, args.tag, args.model, args.work) != 0:
                return 1
    print(table(args.tag))
    return 0


if __name__ == "__main__":
    sys.exit(main())
