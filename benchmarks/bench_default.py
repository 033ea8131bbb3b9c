"""Time `emosdk-bench` with no arguments (the default model on the bundled real clips) and keep
its JSON, with the wall time and the machine, in benchmarks/results/.

    python benchmarks/bench_default.py [--engine fp16] [--out benchmarks/results/bench_default.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", choices=["fp32", "fp16", "int8"])
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    out = args.out or RESULTS / f"bench_default{'_' + args.engine if args.engine else ''}.json"
    cmd = [sys.executable, "-m", "emosdk.bench", "--json"]
    if args.engine:
        cmd += ["--engine", args.engine]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stderr)
        return proc.returncode
    result = json.loads(proc.stdout)
    result["benchmark"] = {
        "command": "emosdk-bench --json" + (f" --engine {args.engine}" if args.engine else ""),
        "wall_s": round(wall, 2),
        "exit_code": proc.returncode,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for row in result["rows"]:
        status = "ok" if row["status"] == "ok" else f"unavailable: {row['reason'][:60]}"
        print(f"{row['backend']:<12} {row['precision']:<5} {status}")
    print(f"wall time {wall:.1f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
