"""Evaluate trained PyTorch checkpoints on files, through the runtime's own pipeline.

The three torch modules (face encoder, audio encoder, fusion) replace the ONNX graphs of a bundle
inside an ``emosdk.Recognizer`` (``emosdk.backends.torch.TorchBackend``); decoding, voice
activity, face detection, windows, masks and the metrics are the runtime's. So this prints the
same figures as ``emosdk-bench accuracy`` on the exported bundle whenever the export is faithful,
and any difference is the export's.

    python -m train.evaluate --checkpoints /tmp/emosdk_seed --manifest /tmp/p1_test.csv
    python -m train.evaluate --checkpoints /tmp/emosdk_seed --partition 1 --split Test

Prints one JSON object: n, skipped, accuracy, macro_f1, micro_f1, uar, per_class, confusion.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import torch

from emosdk import Recognizer
from emosdk.backends.torch import TorchBackend
from emosdk.evaluation import accuracy
from emosdk.models import ModelBundle, load_model

from . import LABELS
from .checkpoints import load_checkpoints
from .models import AudioEncoderGraph


def torch_backends(bundle: ModelBundle, modules: dict[str, torch.nn.Module]) -> dict:
    """A torch reference backend per graph role, with the bundle's specs (same checks)."""
    graphs = {
        "audio_encoder": AudioEncoderGraph(modules["audio"]).eval(),
        "face_encoder": modules["face"],
        "fusion": modules["fusion"],
    }
    return {
        role: TorchBackend(bundle.graph_path(role), bundle.graphs[role], module=module)
        for role, module in graphs.items()
    }


def partition_manifest(partition: int, split: str, out: Path) -> Path:
    from .data import DATA_ROOT, cremad_audio_path, load_cremad_partition

    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "speaker"])
        for clip in load_cremad_partition(partition, DATA_ROOT):
            if clip.split == split:
                w.writerow(
                    [cremad_audio_path(clip.name, DATA_ROOT), LABELS[clip.label], clip.speaker]
                )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", type=Path, required=True, help="train_seed --out folder")
    p.add_argument(
        "--model",
        default="default",
        help="bundle whose front-end and stream parameters to use (the export of "
        "these checkpoints)",
    )
    p.add_argument("--manifest", type=Path, help="CSV file,label (see emosdk-bench accuracy)")
    p.add_argument("--partition", type=int, help="CREMA-D partition 1..5 instead of --manifest")
    p.add_argument("--split", default="Test")
    p.add_argument("--modality", choices=["auto", "audio", "video", "av"], default="auto")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    manifest = args.manifest
    if manifest is None:
        if args.partition is None:
            p.error("pass --manifest or --partition")
        manifest = partition_manifest(
            args.partition, args.split, Path(tempfile.mkdtemp()) / "manifest.csv"
        )
    bundle = load_model(args.model)
    modules = load_checkpoints(args.checkpoints, bundle.audio.n_mels)
    backends = torch_backends(bundle, modules)
    with Recognizer(model=args.model, smoothing="none", backends=backends) as rec:
        out = accuracy(rec, manifest, args.modality, None, robustness=False)
    out.update(
        command="python -m train.evaluate " + " ".join(argv or sys.argv[1:]),
        checkpoints=str(args.checkpoints),
        graphs="torch",
    )
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
