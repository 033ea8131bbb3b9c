"""Write an emosdk-bench manifest (CSV file,label,speaker) for a split of a real corpus.

    python tools/make_manifest.py cremad --partition 1 --split Test --out /tmp/cremad_p1_test.csv
    python tools/make_manifest.py fer2013 --split PublicTest --out /tmp/fer_publictest.csv
    python tools/make_manifest.py fer2013 --split Training --sample 256 --append --out /tmp/c.csv

CREMA-D rows use the perceived consensus labels of the VAVL partitions (the labels the papers
report on), not the intended emotion in the file names. Paths are absolute, so the manifest can
live anywhere; the data stays in ../shared/data.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from train import LABELS  # noqa: E402
from train.data import DATA_ROOT, cremad_audio_path, load_cremad_partition  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus", choices=["cremad", "fer2013"])
    p.add_argument("--partition", type=int, default=1, help="CREMA-D partition 1..5")
    p.add_argument("--split", default="Test", help="Train/Development/Test or PublicTest")
    p.add_argument("--data", type=Path, default=DATA_ROOT)
    p.add_argument("--limit", type=int, default=0, help="keep the first N rows (0: all)")
    p.add_argument("--sample", type=int, default=0, help="keep N rows drawn at random (seed 0)")
    p.add_argument("--append", action="store_true", help="add the rows to an existing CSV")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    rows: list[tuple[str, str, str]] = []
    if args.corpus == "cremad":
        for clip in load_cremad_partition(args.partition, args.data):
            if clip.split == args.split:
                rows.append(
                    (str(cremad_audio_path(clip.name, args.data)), LABELS[clip.label], clip.speaker)
                )
    else:
        with open(args.data / "fer2013" / "manifest.csv", newline="") as f:
            for r in csv.DictReader(f):
                if r["usage"] == args.split:
                    rows.append((str(args.data / "fer2013" / r["file"]), r["label"], ""))
    if args.limit:
        rows = rows[: args.limit]
    if args.sample:
        rng = random.Random(0)
        rows = rng.sample(rows, min(args.sample, len(rows)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    append = args.append and args.out.is_file()
    with open(args.out, "a" if append else "w", newline="") as f:
        w = csv.writer(f)
        if not append:
            w.writerow(["file", "label", "speaker"])
        w.writerows(rows)
    print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
