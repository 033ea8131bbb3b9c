"""Train one paper model (train.models) on CREMA-D + FER2013 faces and evaluate it on Test.

Data: CREMA-D partition ``--partition`` Train / Development / Test with the perceived labels (hard =
majority label, soft = the normalised per-class scores). Audio = log-mel frames of the runtime's
log-mel front-end (``emosdk.features.audio.LogMelParams()``, whatever the bundle's own encoder
uses), one 3 s window per clip (random crop in training, centred in evaluation; frames beyond
the clip are zero and masked), z-normalised with Train statistics and mean-pooled over
``--audio-pool`` frames (4 -> 25 Hz; "hussain" keeps the 100 Hz frames and appends
the 160 raw waveform samples of each frame). Video = face embeddings of the BUNDLED face encoder
(trained on FER2013 Training only), Tv = 15 frames per window drawn from jittered copies of ONE
face: SYNTHETIC PAIRS, each clip paired with a FER2013 face of the same class (Train clips: FER
Training faces; Development clips: held-out FER Training faces; Test clips: FER PublicTest faces).
Every figure that involves a face comes from synthetic pairs and is labelled so.

    python -m train.train --model auxformer --partition 1 --out /tmp/emosdk_runs/auxformer_p1
    torchrun --nproc-per-node 2 -m train.train --model vavl --out DIR      # DDP (gloo / nccl)
    python -m train.train --evaluate-only --out DIR                        # re-evaluate best.pt

Under torchrun every rank trains its DistributedSampler shard of each global batch through
torch.nn.parallel.DistributedDataParallel (gradients averaged over the ranks, batch-norm buffers
of rank 0 broadcast at each forward); rank 0 alone evaluates, logs and writes checkpoints.

Outputs in ``--out``: log.jsonl, config.json, last.pt (resumable state), best.pt (selected on
Development macro-F1), best_<stage>.pt, test_metrics.json, summary.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from emosdk.features.audio import LogMelParams
from emosdk.metrics import classification_report

from . import LABELS
from . import data as D
from .common import (
    augment_faces,
    cosine_lr,
    log_json,
    pair_faces,
    save_logits,
    save_state,
    seed_all,
    window_offsets,
)
from .models import HUSSAIN_D_AUDIO, MODELS, build_model, count_params, optimised_training_mask

logger = logging.getLogger("emosdk.train")

SYNTHETIC = (
    "synthetic pairs: CREMA-D voice + a FER2013 face of the same label (different people; "
    "modalities independent given the label)"
)

_JOURNAL = (
    "AuxFormer journal (TAC) Sec. 4.3: Adam 0.725e-3, batch 32, 25 epochs, grad clip 0.8, "
    "LR decay after 5 epochs without improvement (ReduceLROnPlateau x0.1)"
)
PAPER_DEFAULTS: dict[str, dict] = {
    "auxformer": dict(
        lr=7.25e-4, batch=32, epochs=25, clip=0.8, schedule="plateau", source=_JOURNAL
    ),
    "auxformer_deploy": dict(
        lr=7.25e-4, batch=32, epochs=25, clip=0.8, schedule="plateau", source=_JOURNAL
    ),
    "unimodal_audio": dict(
        lr=7.25e-4, batch=32, epochs=25, clip=0.8, schedule="plateau",
        source="journal baseline 4 (same settings as AuxFormer): " + _JOURNAL,
    ),
    "unimodal_video": dict(
        lr=7.25e-4, batch=32, epochs=25, clip=0.8, schedule="plateau",
        source="journal baseline 4 (same settings as AuxFormer): " + _JOURNAL,
    ),
    "parthasarathy": dict(
        lr=7.25e-4, batch=32, epochs=25, clip=0.8, schedule="plateau",
        source="journal baseline 3, trained on CREMA-D with the AuxFormer settings ("
        + _JOURNAL + "); the SLT paper itself used Adam 1e-5 with a CCC loss on Aff-Wild2",
    ),
    "mult": dict(
        lr=1e-3, batch=24, epochs=40, clip=1.0, schedule="plateau", patience=20,
        source="MulT code defaults: Adam 1e-3, batch 24, 40 epochs, clip 1.0, "
        "ReduceLROnPlateau(patience=when=20, x0.1)",
    ),
    "vavl": dict(
        lr=5e-5, batch=32, epochs=20, clip=0.0, schedule="constant", weight_decay=5e-7,
        betas=(0.95, 0.999), stage_epochs={"unimodal": 20, "fusion": 20},
        source="VAVL paper Sec. 4.3 / run_cremad.sh: Adam 5e-5, wd 5e-7, betas (0.95, 0.999), "
        "batch 32, 20 epochs, no LR schedule, no clipping; Alg. 1's per-batch steps run here as "
        "two stages in turn (unimodal 20 epochs, then the fusion head 20 epochs)",
    ),
    "hussain": dict(
        lr=1e-3, batch=32, epochs=30, clip=1.0, schedule="plateau",
        source="not given in the paper: Adam 1e-3 (PANNs' training), batch 32, 30 epochs, "
        "ReduceLROnPlateau(5, x0.1), clip 1.0",
    ),
}  # fmt: skip
COMMON_DEFAULTS = dict(
    weight_decay=0.0, betas=(0.9, 0.999), patience=5, factor=0.1, warmup=0, source=""
)
METRIC_KEYS = ("macro_f1", "micro_f1", "uar")
MASK_SHARES = tuple(round(0.1 * k, 1) for k in range(1, 10))


def opt(default: object, help: str = "") -> object:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass
class Config:
    """Every option of the script (argparse reads them from here); 0 / -1 / "auto" = default."""

    model: str = opt("auxformer", "a name of train.models.MODELS")
    partition: int = opt(1, "CREMA-D partition 1..5")
    out: str = opt("/tmp/emosdk_runs/auxformer_p1", "run folder (checkpoints, logs, metrics)")
    size: str = opt("paper", "build_model size: paper | smoke")
    overrides: str = opt("", "JSON object of build_model keyword overrides")
    data_root: str = opt(str(D.DATA_ROOT), "the shared data folder")
    cache_dir: str = opt(str(D.CACHE_DIR), 'feature cache ("" = none; never used with --limit)')
    bundle: str = opt("default", "bundle whose face encoder embeds the FER2013 faces")
    pairing: str = opt("synthetic", "synthetic | unpaired (training only; evaluation is paired)")
    optimised_training: bool | None = opt(None, "AuxFormer's modality zeroing (on for auxformer*)")
    optimised_per_sample: bool = opt(False, "zero per sample (journal Sec. 3.6), not per batch")
    epochs: int = opt(0, "epochs of every stage (0 = paper default)")
    stage_epochs: str = opt("", '"unimodal=20,fusion=10" or "20,10": epochs per stage')
    batch: int = opt(0, "global batch, split over the DDP ranks (0 = paper default)")
    lr: float = opt(0.0, "Adam learning rate (0 = paper default)")
    weight_decay: float = opt(-1.0, "Adam weight decay (<0 = paper default)")
    schedule: str = opt("auto", "plateau | cosine | constant | auto (paper default)")
    patience: int = opt(0, "ReduceLROnPlateau patience, epochs without a lower Development loss")
    warmup: int = opt(-1, "cosine warmup steps (<0: min(200, 5 %% of the steps))")
    clip: float = opt(-1.0, "gradient-norm clip (0 = off, <0 = paper default)")
    select: str = opt("auto", "auto | av | mean: the Development macro-F1 that selects")
    audio_pool: int = opt(0, "log-mel frames averaged per audio step (0 = 4; hussain: 1)")
    face_jitters: int = opt(4, "jittered copies per face, from which the Tv frames are drawn")
    dev_face_share: float = opt(0.1, "FER Training faces held out for the Development pairs")
    eval_batch: int = opt(64, "evaluation batch")
    mask_seed: int = opt(1234, "seed of the masking evaluation's random frames")
    seed: int = opt(0, "seed of everything else")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    threads: int = opt(2, "torch and onnxruntime CPU threads")
    limit: int = opt(0, "smoke run: N clips per split and N faces per class")
    max_steps: int = opt(0, "stop each stage after N batches")
    resume: bool = opt(False, "continue from OUT/last.pt")
    evaluate_only: bool = opt(False, "only evaluate OUT/best.pt (config from OUT)")
    progress: bool = opt(True, "tqdm progress bars")


# -----------------------------------------------------------------------------------------------
# distributed helpers


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def mean(self, x: float) -> float:
        if self.world == 1:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.world

    def gather(self, obj: object) -> list:
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: object) -> object:
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def setup_dist(cfg: Config) -> Dist:
    """Single process, or torchrun's env:// group (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and world > 1:
        want = f"cuda:{local}"
    device = torch.device(want)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        # rank 0 evaluates alone (Development each epoch, Test at the end): a generous timeout
        torch.distributed.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=3)
        )
    return Dist(rank, world, device)


def wrap_ddp(model: torch.nn.Module, dist: Dist) -> torch.nn.Module:
    """What a training stage runs its forward through: ``DistributedDataParallel(model)`` over the
    ranks, or ``model`` itself in one process.

    Built anew at each stage start: DDP registers the parameters that require grad when it is
    constructed, and a stage (VAVL "unimodal" / "fusion") changes ``requires_grad``; frozen
    parameters are not reduced. The constructor broadcasts rank 0's parameters and buffers; in
    training every forward broadcasts rank 0's buffers (default ``broadcast_buffers``), and the
    backward averages the gradients over the ranks.

    ``find_unused_parameters=True``: a forward may leave trainable parameters out of the graph
    (a branch taken per batch). DDP reduces such a parameter as zeros on the ranks where it is
    unused, and one unused on EVERY rank keeps ``grad = None`` (checked with torch 2.13:
    ``zero_grad(set_to_none=True)`` then a branch skipped on all ranks leaves ``.grad`` None and
    Adam does not step it), as in one process and as the former hand-written all-reduce. The
    paper models use every trainable parameter in every batch (an absent modality is zeros with
    a zero mask), so there the flag costs one autograd-graph traversal per step, and DDP warns
    once per rank that it found no unused parameter. Every tensor that forward returns must feed
    the loss or depend only on parameters frozen in the stage (DDP waits for a gradient of each
    parameter reachable from the outputs).

    Not equal to one process on the global batch: batch-norm statistics are per rank (no
    SyncBatchNorm; the running statistics are rank 0's), a branch decided per batch is decided
    per shard, and a loss that is a weighted mean (samples with a modality) is averaged over the
    shards' means. Each rank also draws its own crops, face pairs, frames and dropout masks.
    """
    if dist.world == 1:
        return model
    ids = None
    if dist.device.type == "cuda":
        ids = [dist.device.index if dist.device.index is not None else torch.cuda.current_device()]
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=True
    )


def broadcast_model(model: torch.nn.Module, dist: Dist) -> None:
    """Rank 0's parameters and buffers to every rank (outside DDP: the stage's selected weights)."""
    if dist.world > 1:
        for t in model.state_dict().values():
            torch.distributed.broadcast(t, 0)


# -----------------------------------------------------------------------------------------------
# data: clips, faces, windows


@dataclass
class Split:
    names: list[str]
    y: np.ndarray  # (N,) hard perceived label
    soft: np.ndarray  # (N, C) normalised perceived scores
    feats: list[np.ndarray]  # per clip: z-normalised log-mel (T, n_mels)
    pcm: list[np.ndarray] | None = None  # per clip 16 kHz PCM ("hussain" only)


@dataclass
class Faces:
    emb: np.ndarray  # (N, J, Dv) z-normalised embeddings of J jittered copies
    y: np.ndarray  # (N,) project label


@dataclass
class Data:
    splits: dict[str, Split]
    faces: dict[str, Faces]  # "train", "dev", "test"
    frames: int  # log-mel frames per window (298)
    tv: int  # video frames per window (15)
    pool: int
    hussain: bool
    hop: int
    d_audio: int
    d_video: int
    norm: dict[str, np.ndarray]  # audio_mean/std, video_mean/std
    counts: dict


def embed_faces(faces: np.ndarray, enc_path: Path, jitters: int, seed: int, threads: int):
    """(N, 1, S, S) normalised faces -> (N, jitters, Dv) bundled face-encoder embeddings.

    Copy 0 is the clean face, the others small shifts / flips / brightness changes (as train_seed).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    sess = ort.InferenceSession(str(enc_path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    gen = torch.Generator().manual_seed(seed)
    out = None
    for j in range(jitters):
        for s in range(0, len(faces), 512):
            xb = torch.from_numpy(faces[s : s + 512])
            if j:
                xb = augment_faces(xb, gen, pad=2, flip=True)
            e = sess.run(None, {name: xb.numpy().astype(np.float32)})[0]
            if out is None:
                out = np.zeros((len(faces), jitters, e.shape[1]), np.float32)
            out[s : s + 512, j] = e
    return out


def load_faces(cfg: Config, usage: str) -> tuple[np.ndarray, np.ndarray]:
    """FER2013 ``usage`` faces without surprise: embeddings (N, J, Dv), project labels (N,)."""
    from emosdk.models import load_model

    bundle = load_model(cfg.bundle)
    enc = bundle.graph_path("face_encoder")
    root = Path(cfg.data_root)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir and not cfg.limit else None
    faces, y = D.load_fer2013(usage, bundle.face, root, cfg.limit or None, cache_dir=cache_dir)
    yp = D.fer_to_project(y)
    keep = yp >= 0
    key = hashlib.sha256(
        json.dumps(
            [bundle.meta["files"][bundle.graphs["face_encoder"].file], bundle.face.to_dict()]
            + [usage, cfg.face_jitters, cfg.seed]
        ).encode()
    ).hexdigest()[:12]
    path = cache_dir / f"fer2013_{usage}_faceemb_{key}.npy" if cache_dir else None
    if path is not None and path.exists():
        emb = np.load(path)
    else:
        emb = embed_faces(faces[keep], enc, cfg.face_jitters, cfg.seed, cfg.threads)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, emb)
            tmp.replace(path)
    return emb, yp[keep]


def load_data(cfg: Config, dist: Dist, splits: tuple[str, ...], norm: dict | None = None) -> Data:
    """Clips of ``splits``, their audio, and the faces they are paired with.

    ``norm`` (from a checkpoint) replaces the Train statistics, so evaluation needs no Train data.
    """
    from emosdk.models import load_model

    root = Path(cfg.data_root)
    cache = Path(cfg.cache_dir) if cfg.cache_dir and not cfg.limit else None
    hussain = cfg.model == "hussain"
    pool = cfg.audio_pool or (1 if hussain else 4)
    if hussain and pool != 1:
        raise SystemExit("--audio-pool must be 1 for hussain (100 Hz frames + waveform samples)")
    bundle = load_model(cfg.bundle)  # the runtime's window parameters
    # the paper models take the log-mel front end (64 bins; hussain's frame layout needs it),
    # whatever front end the bundle's own audio encoder uses (the default's is Whisper's)
    audio_p, stream_p = LogMelParams(), bundle.stream
    if hussain:
        assert audio_p.n_mels + audio_p.hop_length == HUSSAIN_D_AUDIO, "hussain frame layout"
    frames = audio_p.num_frames(int(round(stream_p.window_s * audio_p.sample_rate)))  # 298
    tv = int(round(stream_p.window_s * stream_p.video_fps))  # 15
    clips = D.load_cremad_partition(cfg.partition, root)
    soft = D.load_cremad_soft(cfg.partition, root)
    by = {s: [c for c in clips if c.split == s] for s in splits}
    if cfg.limit:
        by = {s: v[: cfg.limit] for s, v in by.items()}
    names = [c.name for v in by.values() for c in v]
    # rank 0 fills the caches first, the others read them
    if not dist.main:
        dist.barrier()
    mel = D.logmel_cache(names, audio_p, root, cache_dir=cache)
    pcm = D.waveform_cache(names, audio_p.sample_rate, root, cache_dir=cache) if hussain else None
    fer = {}
    if "Train" in splits or "Development" in splits:
        fer["Training"] = load_faces(cfg, "Training")
    if "Test" in splits:
        fer["PublicTest"] = load_faces(cfg, "PublicTest")
    if dist.main:
        dist.barrier()

    if norm is None:
        tr = np.concatenate([mel[c.name] for c in by["Train"]])
        emb_tr = fer["Training"][0].reshape(-1, fer["Training"][0].shape[-1])
        norm = {
            "audio_mean": tr.mean(0),
            "audio_std": tr.std(0) + 1e-5,
            "video_mean": emb_tr.mean(0),
            "video_std": emb_tr.std(0) + 1e-5,
        }
    norm = {k: np.asarray(v, np.float32) for k, v in norm.items()}
    split_data = {
        s: Split(
            names=[c.name for c in v],
            y=np.array([c.label for c in v], np.int64),
            soft=np.stack([soft[c.name] for c in v]).astype(np.float32),
            feats=[(mel[c.name] - norm["audio_mean"]) / norm["audio_std"] for c in v],
            pcm=[pcm[c.name] for c in v] if pcm is not None else None,
        )
        for s, v in by.items()
    }

    def normed(emb: np.ndarray) -> np.ndarray:
        return ((emb - norm["video_mean"]) / norm["video_std"]).astype(np.float32)

    faces = {}
    if "Training" in fer:
        emb, y = fer["Training"]
        dev = np.zeros(len(y), bool)  # every k-th face of each class: Development pairs only
        step = max(2, int(round(1 / max(cfg.dev_face_share, 1e-3))))
        for c in range(len(LABELS)):
            dev[np.flatnonzero(y == c)[::step]] = True
        faces["train"] = Faces(normed(emb[~dev]), y[~dev])
        faces["dev"] = Faces(normed(emb[dev]), y[dev])
    if "PublicTest" in fer:
        faces["test"] = Faces(normed(fer["PublicTest"][0]), fer["PublicTest"][1])
    n_mels = audio_p.n_mels
    return Data(
        splits=split_data,
        faces=faces,
        frames=frames,
        tv=tv,
        pool=pool,
        hussain=hussain,
        hop=audio_p.hop_length,
        d_audio=n_mels + (audio_p.hop_length if hussain else 0),
        d_video=next(iter(faces.values())).emb.shape[-1],
        norm=norm,
        counts={
            "cremad": {s: len(v.names) for s, v in split_data.items()},
            "faces": {k: len(f.y) for k, f in faces.items()},
        },
    )


def pcm_frames(pcm: np.ndarray, start: int, n: int, hop: int) -> np.ndarray:
    """Waveform samples [hop t, hop t + hop) of log-mel frames t = start..start+n: (n, hop)
    (the layout of train.models.Hussain: concatenated they give back the waveform)."""
    seg = pcm[start * hop : (start + n) * hop]
    if len(seg) < n * hop:
        seg = np.pad(seg, (0, n * hop - len(seg)))
    return seg.reshape(n, hop)


def audio_inputs(
    data: Data, split: Split, idx: np.ndarray, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """Windows of clips ``idx``: audio (B, Ta, Da) zero where absent, mask (B, Ta)."""
    B, F_ = len(idx), data.frames
    x = np.zeros((B, F_, data.d_audio), np.float32)
    m = np.zeros((B, F_), np.float32)
    for b, i in enumerate(idx):
        f = split.feats[i]
        src, dst, n = window_offsets(len(f), F_, rng)
        x[b, dst : dst + n, : f.shape[1]] = f[src : src + n]
        if data.hussain:
            x[b, dst : dst + n, f.shape[1] :] = pcm_frames(split.pcm[i], src, n, data.hop)
        m[b, dst : dst + n] = 1.0
    if data.pool > 1:
        k, T = data.pool, F_ // data.pool
        xs = (x[:, : T * k] * m[:, : T * k, None]).reshape(B, T, k, -1).sum(2)
        ms = m[:, : T * k].reshape(B, T, k).sum(2)
        x = xs / np.maximum(ms, 1.0)[..., None]
        m = (ms > 0).astype(np.float32)
    return x, m


def video_inputs(
    faces: Faces, face_idx: np.ndarray, tv: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Tv frames of each paired face, drawn from its jittered copies: (B, Tv, Dv), mask (B, Tv)."""
    J = faces.emb.shape[1]
    frames = rng.integers(0, J, (len(face_idx), tv))
    v = faces.emb[np.asarray(face_idx)[:, None], frames]
    return v.astype(np.float32), np.ones(v.shape[:2], np.float32)


@dataclass
class EvalSet:
    """Fixed inputs of one split: centred windows, fixed synthetic pairs and frames."""

    a: np.ndarray
    am: np.ndarray
    v: np.ndarray
    vm: np.ndarray
    y: np.ndarray
    faces_distinct: int


def eval_set(cfg: Config, data: Data, split: str) -> EvalSet:
    s = data.splits[split]
    faces = data.faces["dev" if split == "Development" else "test"]
    code = {"Development": 1, "Test": 2}[split]
    a, am = audio_inputs(data, s, np.arange(len(s.y)), None)
    pairs = pair_faces(s.y, faces.y, np.random.default_rng([cfg.seed, 4, code]))
    v, vm = video_inputs(faces, pairs, data.tv, np.random.default_rng([cfg.seed, 5, code]))
    return EvalSet(a, am, v, vm, s.y, len(set(pairs.tolist())))


# -----------------------------------------------------------------------------------------------
# model, batches, evaluation


def build(cfg: Config, data_d_audio: int, data_d_video: int) -> torch.nn.Module:
    overrides = json.loads(cfg.overrides) if cfg.overrides else {}
    return build_model(cfg.model, data_d_audio, data_d_video, len(LABELS), cfg.size, **overrides)


def conditions(model: torch.nn.Module) -> tuple[str, ...]:
    return {"av": ("av", "audio_only", "video_only"), "audio": ("audio_only",)}.get(
        model.modalities, ("video_only",)
    )


def condition_note(cond: str, model: torch.nn.Module) -> str:
    if cond == "audio_only":
        base = "CREMA-D Test audio (real)"
        if model.modalities == "av":
            base += "; video input masked; model trained on " + SYNTHETIC
        return base
    if cond == "video_only":
        return (
            "FER2013 PublicTest faces paired with the CREMA-D Test clips of the same label "
            "(video side of the synthetic pairs); audio input masked"
        )
    return SYNTHETIC + " (Test clips x FER2013 PublicTest faces)"


def apply_condition(
    a: torch.Tensor, am: torch.Tensor, v: torch.Tensor, vm: torch.Tensor, cond: str
) -> tuple[torch.Tensor, ...]:
    if cond == "audio_only":
        v, vm = v * 0, vm * 0
    elif cond == "video_only":
        a, am = a * 0, am * 0
    return a, am, v, vm


def keep_share(mask: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Keep exactly round(share * present) (at least 1) random present positions of each row."""
    out = np.zeros_like(mask)
    for b in range(len(mask)):
        present = np.flatnonzero(mask[b] > 0)
        if len(present):
            k = max(1, int(round(share * len(present))))
            out[b, rng.choice(present, k, replace=False)] = 1.0
    return out


@torch.no_grad()
def predict(
    model: torch.nn.Module, ev: EvalSet, cond: str, dev: torch.device, bs: int, masks=None
) -> tuple[np.ndarray, float]:
    """Logits (N, classes) and mean CE of ``out["logits"]`` under a condition (and masks)."""
    model.eval()
    am_all, vm_all = masks if masks is not None else (ev.am, ev.vm)
    preds, loss = [], 0.0
    for s in range(0, len(ev.y), bs):
        sl = slice(s, s + bs)
        am, vm = torch.from_numpy(am_all[sl]), torch.from_numpy(vm_all[sl])
        a = torch.from_numpy(ev.a[sl]) * am[..., None]
        v = torch.from_numpy(ev.v[sl]) * vm[..., None]
        a, am, v, vm = (t.to(dev) for t in apply_condition(a, am, v, vm, cond))
        logits = model(a, am, v, vm)["logits"].float()
        y = torch.from_numpy(ev.y[sl]).to(dev)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        preds.append(logits.cpu().numpy())
    return np.concatenate(preds), loss / max(1, len(ev.y))


def rng_devices(dev: torch.device) -> list[int]:
    """CUDA devices whose RNG torch.random.fork_rng saves and restores around an evaluation."""
    if dev.type != "cuda":
        return []
    return [dev.index if dev.index is not None else torch.cuda.current_device()]


def evaluate(
    model, ev: EvalSet, conds, dev, bs, logits: dict | None = None
) -> tuple[dict[str, dict], dict[str, float]]:
    """Reports and mean CE per condition; fills ``logits`` (condition -> (N, classes)) if given."""
    reports, losses = {}, {}
    with torch.random.fork_rng(devices=rng_devices(dev)):
        for c in conds:
            z, losses[c] = predict(model, ev, c, dev, bs)
            reports[c] = classification_report(ev.y, z.argmax(-1), LABELS)
            if logits is not None:
                logits[c] = z
    return reports, losses


def masking_curves(cfg: Config, model, ev: EvalSet, dev) -> dict:
    """Journal AuxFormer Fig. 5: a share of the frames of one modality kept (the rest zeroed and
    masked), the other modality complete; plus both modalities masked at once (extra curve)."""
    kinds = {"av": ("audio", "video", "both"), "audio": ("audio",), "video": ("video",)}[
        model.modalities
    ]
    cond = conditions(model)[0]
    curves = {}
    for kind in kinds:
        rng = np.random.default_rng([cfg.mask_seed, ("audio", "video", "both").index(kind)])
        pts = []
        for share in MASK_SHARES:
            am = keep_share(ev.am, share, rng) if kind in ("audio", "both") else ev.am
            vm = keep_share(ev.vm, share, rng) if kind in ("video", "both") else ev.vm
            with torch.random.fork_rng(devices=rng_devices(dev)):
                z, _ = predict(model, ev, cond, dev, cfg.eval_batch, masks=(am, vm))
                p = z.argmax(-1)
            r = classification_report(ev.y, p, LABELS)
            pts.append(
                {"kept": share, "masked": round(1 - share, 1)}
                | {k: r[k] for k in ("accuracy", "macro_f1", "micro_f1", "uar")}
            )
        curves[kind] = pts
    return {
        "protocol": "journal AuxFormer (TAC) Sec. 5.2.2 / Fig. 5: a random share of the frames "
        "(sequence positions) of the masked modality is replaced by zeros and masked, the other "
        "modality complete; 'kept' = share of frames available (0.1..0.9), 'masked' = 1 - kept. "
        "'both' masks the same share in both modalities at once (not in the paper).",
        "seed": cfg.mask_seed,
        "condition": cond,
        "note": SYNTHETIC if model.modalities != "audio" else "CREMA-D Test audio (real)",
        "curves": curves,
    }


def optimised_mask_fn(per_sample: bool):
    """AuxFormer's optimised training (train.models.optimised_training_mask): 20 % of the
    batches (per_sample: of the samples) without audio, 20 % without video."""
    return functools.partial(optimised_training_mask, per_sample=per_sample)


# -----------------------------------------------------------------------------------------------
# training


def resolve(cfg: Config, model: torch.nn.Module) -> dict:
    """The run's hyper-parameters: paper defaults overridden by the command line."""
    d = {**COMMON_DEFAULTS, **PAPER_DEFAULTS.get(cfg.model, {})}
    if cfg.lr > 0:
        d["lr"] = cfg.lr
    if cfg.batch > 0:
        d["batch"] = cfg.batch
    if cfg.epochs > 0:
        d["epochs"] = cfg.epochs
    if cfg.weight_decay >= 0:
        d["weight_decay"] = cfg.weight_decay
    if cfg.clip >= 0:
        d["clip"] = cfg.clip
    if cfg.schedule != "auto":
        d["schedule"] = cfg.schedule
    if cfg.patience > 0:
        d["patience"] = cfg.patience
    stages = list(model.stages)
    stage_epochs = {s: d["epochs"] for s in stages}
    if cfg.epochs <= 0:
        stage_epochs.update(d.get("stage_epochs", {}))
    if cfg.stage_epochs:
        parts = cfg.stage_epochs.split(",")
        for i, part in enumerate(parts):
            name, _, val = part.rpartition("=")
            stage_epochs[name or stages[i]] = int(val)
    d["stage_epochs"] = stage_epochs
    d["optimised_training"] = (
        cfg.optimised_training
        if cfg.optimised_training is not None
        else cfg.model.startswith("auxformer")
    ) and model.modalities == "av"
    d["pairing"] = cfg.pairing if model.modalities == "av" else "single modality"
    d["betas"] = tuple(d["betas"])
    return d


def rng_states(rng: np.random.Generator, gen: torch.Generator, dev: torch.device) -> dict:
    s = {"np": rng.bit_generator.state, "gen": gen.get_state(), "torch": torch.get_rng_state()}
    if dev.type == "cuda":
        s["cuda"] = torch.cuda.get_rng_state(dev)
    return s


def set_rng_states(s: dict, rng: np.random.Generator, gen: torch.Generator, dev) -> None:
    rng.bit_generator.state = s["np"]
    gen.set_state(s["gen"])
    torch.set_rng_state(s["torch"])
    if dev.type == "cuda" and "cuda" in s:
        torch.cuda.set_rng_state(s["cuda"], dev)


def cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def norm_tensors(data: Data) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in data.norm.items()}


def train(cfg: Config, hp: dict, model, data: Data, dist: Dist, out: Path, progress: bool) -> dict:
    """Every stage of the model in turn; resumable from ``out/last.pt``. Returns the selection."""
    dev = dist.device
    stages = list(model.stages)
    tr = data.splits["Train"]
    dev_set = eval_set(cfg, data, "Development") if dist.main else None
    conds = conditions(model)
    mask_fn = optimised_mask_fn(cfg.optimised_per_sample) if hp["optimised_training"] else None
    per_rank = max(1, hp["batch"] // dist.world)
    state = None
    if cfg.resume and (out / "last.pt").exists():
        state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        if dist.main:
            log_json(
                out, event="resume", stage=stages[state["stage_idx"]], epoch=state["epoch"],
                step=state["step"], pos=state["pos"],
            )  # fmt: skip
    start = state["stage_idx"] if state else 0
    selection: dict = state["selection"] if state else {}
    for si, stage in enumerate(stages):
        if si < start:
            continue
        model.set_stage(stage)
        epochs = hp["stage_epochs"][stage]
        params = [p for p in model.parameters() if p.requires_grad]
        net = wrap_ddp(model, dist)  # after set_stage: DDP reduces the stage's trainable params
        opt = torch.optim.Adam(
            params, lr=hp["lr"], betas=hp["betas"], weight_decay=hp["weight_decay"]
        )
        sampler = torch.utils.data.DistributedSampler(
            range(len(tr.y)), num_replicas=dist.world, rank=dist.rank, shuffle=True,
            seed=cfg.seed + 1000 * si,
        )  # fmt: skip
        n_rank = len(sampler)
        bpe = math.ceil(n_rank / per_rank)
        if bpe > 1 and n_rank - (bpe - 1) * per_rank < 2:
            bpe -= 1  # a trailing batch of one sample is dropped (batch norm needs two)
        total = epochs * bpe
        if hp["schedule"] == "cosine":
            warm = hp["warmup"] if cfg.warmup < 0 else cfg.warmup
            warm = warm or max(1, min(200, total // 20))
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s, total=total, warm=warm: cosine_lr(s, total, warm)
            )
        elif hp["schedule"] == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=hp["factor"], patience=hp["patience"]
            )
        else:
            sched = None
        rng = np.random.default_rng([cfg.seed, si, dist.rank])
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + 10 * si + dist.rank)
        epoch, pos, step, best, history = 0, 0, 0, -math.inf, []
        if state is not None and si == start:
            opt.load_state_dict(state["opt"])
            if sched is not None and state["sched"]:
                sched.load_state_dict(state["sched"])
            set_rng_states(state["rng"][dist.rank], rng, gen, dev)
            epoch, pos, step = state["epoch"], state["pos"], state["step"]
            best, history = state["best"], state["history"]
        stopped = False
        while epoch < epochs:
            if cfg.max_steps and step >= cfg.max_steps:
                stopped = True
                break
            sampler.set_epoch(epoch)
            order = np.array(list(iter(sampler)))
            model.train()
            losses: list[float] = []
            seen: list[int] = []
            modes: dict[str, int] = {}  # batches by the modalities present (rank 0)
            pbar = tqdm(
                range(pos, bpe),
                desc=f"{stage} {epoch + 1}/{epochs}",
                leave=False,
                disable=not (progress and dist.main),
            )
            for b in pbar:
                if cfg.max_steps and step >= cfg.max_steps:
                    break
                idx = order[b * per_rank : (b + 1) * per_rank]
                seen.extend(idx.tolist())
                batch = make_batch(cfg, hp, data, idx, rng, gen, dev, model.modalities, mask_fn)
                modes[batch_mode(batch)] = modes.get(batch_mode(batch), 0) + 1
                loss = train_step(net, batch, opt, params, hp["clip"])
                if hp["schedule"] == "cosine":
                    sched.step()
                step, pos = step + 1, b + 1
                losses.append(loss)
                last_f1 = f"{history[-1]['select']:.3f}" if history else "-"
                pbar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", dev_f1=last_f1)
            partial = pos < bpe  # stopped by --max-steps inside the epoch
            mean_loss = dist.mean(float(np.mean(losses)) if losses else float("nan"))
            if dist.world > 1 and epoch == 0 and seen:
                indices = dist.gather(seen)
                sums = dist.gather(float(sum(float(p.detach().double().sum()) for p in params)))
                if dist.main:
                    log_json(
                        out, event="ddp", stage=stage, world=dist.world, ddp=type(net).__name__,
                        find_unused_parameters=net.find_unused_parameters, indices=indices,
                        param_sums=sums,
                    )  # fmt: skip
            if not partial:
                epoch, pos = epoch + 1, 0
            rec, score, dev_loss = {}, None, None
            if dist.main:
                reports, dl = evaluate(model, dev_set, conds, dev, cfg.eval_batch)
                sel = select_conditions(cfg, stage, stages, model)
                score = float(np.mean([reports[c]["macro_f1"] for c in sel]))
                dev_loss = float(np.mean([dl[c] for c in sel]))
                rec = {
                    "event": "partial_epoch" if partial else "epoch",
                    "stage": stage,
                    "epoch": epoch,
                    "step": step,
                    "loss": mean_loss,
                    "lr": opt.param_groups[0]["lr"],
                    "select": score,
                    "select_on": sel,
                    "batch_modalities": modes,
                    "dev_loss": dev_loss,
                    "dev": {c: {k: reports[c][k] for k in METRIC_KEYS} for c in conds},
                    "note": SYNTHETIC if model.modalities != "audio" else "",
                }
            if not partial:
                dev_loss = dist.broadcast(dev_loss)
                if hp["schedule"] == "plateau":
                    sched.step(dev_loss)
                if dist.main:
                    history.append({k: rec[k] for k in ("epoch", "step", "loss", "select")})
                    if score > best or stage not in selection or selection[stage].get("partial"):
                        best = max(best, score)
                        save_state(
                            out / "best.pt", **best_state(model, data, stage, epoch, step, score)
                        )
                        selection[stage] = {"epoch": epoch, "step": step, "dev_macro_f1": score}
            elif dist.main and stage not in selection:
                # stopped inside the first epoch: keep a best.pt for the test evaluation, but do
                # not count it as the best (a resumed run selects exactly as an uninterrupted one)
                save_state(
                    out / "best.pt", **best_state(model, data, stage, epoch, step, score, True)
                )
                selection[stage] = {
                    "epoch": epoch, "step": step, "dev_macro_f1": score, "partial": True
                }  # fmt: skip
            all_rng = dist.gather(rng_states(rng, gen, dev))
            if dist.main:
                log_json(out, **rec)
                last = {
                    "model": cpu_state(model),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict() if sched is not None else {},
                    "rng": all_rng,
                    "stage_idx": si,
                    "epoch": epoch,
                    "pos": pos,
                    "step": step,
                    "best": best,
                    "history": history,
                    "selection": selection,
                }
                save_state(out / "last.pt", **last)
            if partial:
                stopped = True
                break
        if stopped and dist.main:
            log_json(out, event="stop", stage=stage, step=step, reason="max_steps")
        # the stage's selected weights go on to the next stage and the test
        if dist.main:
            best_sd = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(best_sd["model"])
            save_state(out / f"best_{stage}.pt", **best_sd)
        broadcast_model(model, dist)
        selection = dist.broadcast(selection)
        state, net = None, None  # drop the stage's DDP wrapper (and its gradient hooks)
    return selection


def select_conditions(cfg: Config, stage: str, stages: list[str], model) -> list[str]:
    conds = list(conditions(model))
    unimodal = [c for c in conds if c != "av"]
    if cfg.select == "mean":
        return conds
    if cfg.select == "av" and "av" in conds:
        return ["av"]
    if stage != stages[-1] and unimodal:  # e.g. VAVL "unimodal": the fusion head is untrained
        return unimodal
    return conds[:1]


def best_state(model, data: Data, stage, epoch, step, score, partial=False) -> dict:
    return {
        "model": cpu_state(model), "norm": norm_tensors(data), "stage": stage, "epoch": epoch,
        "step": step, "dev_macro_f1": score if score is not None else float("nan"),
        "partial": partial,
    }  # fmt: skip


def batch_mode(batch: dict) -> str:
    """Which modalities a batch holds: av, audio, video, mixed (per-sample zeroing) or none."""
    pa = (batch["audio_mask"].sum(1) > 0).float().mean().item()
    pv = (batch["video_mask"].sum(1) > 0).float().mean().item()
    if pa == 1 and pv == 1:
        return "av"
    if (pa, pv) in ((1, 0), (0, 1)):
        return "audio" if pa else "video"
    return "none" if pa == pv == 0 else "mixed"


def make_batch(cfg, hp, data: Data, idx, rng, gen, dev, modalities: str, mask_fn) -> dict:
    """One training batch; absent modalities are zeros with a zero mask."""
    tr, B = data.splits["Train"], len(idx)
    y, soft = tr.y[idx], tr.soft[idx]
    mode = modalities
    if modalities == "av" and hp["pairing"] == "unpaired":
        mode = "audio" if rng.random() < 0.5 else "video"  # VAVL / UAVM: one modality per batch
    faces = data.faces["train"]
    Ta = data.frames // data.pool
    if mode in ("av", "audio"):
        a, am = audio_inputs(data, tr, idx, rng)
    else:
        a, am = np.zeros((B, Ta, data.d_audio), np.float32), np.zeros((B, Ta), np.float32)
    if mode == "video" and modalities == "av":  # unpaired: faces from their own corpus
        fidx = rng.integers(0, len(faces.y), B)
        y = faces.y[fidx]
        soft = np.eye(len(LABELS), dtype=np.float32)[y]
        v, vm = video_inputs(faces, fidx, data.tv, rng)
    elif mode in ("av", "video"):
        v, vm = video_inputs(faces, pair_faces(y, faces.y, rng), data.tv, rng)
    else:
        v = np.zeros((B, data.tv, data.d_video), np.float32)
        vm = np.zeros((B, data.tv), np.float32)
    batch = {
        "audio": torch.from_numpy(a), "audio_mask": torch.from_numpy(am),
        "video": torch.from_numpy(v), "video_mask": torch.from_numpy(vm),
        "label": torch.from_numpy(np.asarray(y, np.int64)), "soft": torch.from_numpy(soft),
    }  # fmt: skip
    if mask_fn is not None:
        batch = mask_fn(batch, gen)
    return {k: t.to(dev) for k, t in batch.items()}


def train_step(net: torch.nn.Module, batch: dict, opt, params, clip: float) -> float:
    """Forward through ``net`` (the DDP wrapper, or the model in one process), the model's
    ``compute_loss``, backward (DDP averages the gradients over the ranks), clip, Adam step."""
    model = net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net
    opt.zero_grad(set_to_none=True)
    out = net(batch["audio"], batch["audio_mask"], batch["video"], batch["video_mask"])
    loss = model.compute_loss(out, batch)
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return float(loss.detach())


# -----------------------------------------------------------------------------------------------
# test evaluation and outputs


def test_and_write(cfg: Config, model, data: Data, out: Path, dev, command: str, extra: dict):
    """Evaluate best.pt on Test: test_metrics.json and summary.json."""
    ck = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(ck["model"])
    model.to(dev).eval()
    ev = eval_set(cfg, data, "Test")
    conds = conditions(model)
    if "Development" in data.splits:  # Development logits too: ensembles are chosen on them
        dev_ev, dev_logits = eval_set(cfg, data, "Development"), {}
        evaluate(model, dev_ev, conds, dev, cfg.eval_batch, dev_logits)
        names = data.splits["Development"].names
        save_logits(out / "logits.npz", "Development", names, dev_ev.y, dev_logits)
    logits: dict[str, np.ndarray] = {}
    reports, _ = evaluate(model, ev, conds, dev, cfg.eval_batch, logits)
    save_logits(out / "logits.npz", "Test", data.splits["Test"].names, ev.y, logits)
    masking = masking_curves(cfg, model, ev, dev)
    synthetic = model.modalities != "audio"
    metrics = {
        "model": cfg.model,
        "partition": cfg.partition,
        "split": "Test",
        "command": command,
        "synthetic_pairs": synthetic,
        "note": SYNTHETIC if synthetic else "CREMA-D Test audio only (real data)",
        "selected": {"stage": ck["stage"], "epoch": ck["epoch"], "step": ck["step"],
                     "dev_macro_f1": ck["dev_macro_f1"], "partial_epoch": ck["partial"]},
        "test_faces_distinct": ev.faces_distinct if synthetic else 0,
        "conditions": {c: {"data": condition_note(c, model), **reports[c]} for c in conds},
        "masking": masking,
    }  # fmt: skip
    (out / "test_metrics.json").write_text(json.dumps(metrics, indent=2))
    summary = {
        "command": command,
        "model": cfg.model,
        "partition": cfg.partition,
        "synthetic_pairs": synthetic,
        "note": metrics["note"],
        **extra,
        "selected": metrics["selected"],
        "test": {
            c: {k: reports[c][k] for k in ("n", "accuracy", "macro_f1", "micro_f1", "uar")}
            | {"data": condition_note(c, model)}
            for c in conds
        },
        "masking_macro_f1": {
            kind: {str(p["masked"]): p["macro_f1"] for p in pts}
            for kind, pts in masking["curves"].items()
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log_json(
        out, event="test", note=metrics["note"],
        **{f"{c}_macro_f1": reports[c]["macro_f1"] for c in conds},
        **{f"{c}_micro_f1": reports[c]["micro_f1"] for c in conds},
    )  # fmt: skip
    return metrics


# -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    choices = {
        "model": sorted(MODELS),
        "size": ["paper", "smoke"],
        "pairing": ["synthetic", "unpaired"],
        "schedule": ["auto", "plateau", "cosine", "constant"],
        "select": ["auto", "av", "mean"],
    }
    for f in dataclasses.fields(Config):
        flag, h = "--" + f.name.replace("_", "-"), f"{f.metadata['help']} (default {f.default!r})"
        if f.type in ("bool", "bool | None"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=h)
        else:
            p.add_argument(
                flag, type=type(f.default), default=f.default, help=h, choices=choices.get(f.name)
            )
    return Config(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    out = Path(cfg.out)
    if cfg.evaluate_only:
        saved = json.loads((out / "config.json").read_text())
        keep = {k: getattr(cfg, k) for k in ("out", "device", "threads", "eval_batch", "progress")}
        cfg = Config(**{**saved, **keep, "evaluate_only": True})
    torch.set_num_threads(cfg.threads)
    dist = setup_dist(cfg)
    launcher = f"torchrun --nproc-per-node {dist.world} -m" if dist.world > 1 else "python -m"
    command = f"{launcher} train.train " + " ".join(shlex.quote(a) for a in argv)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.evaluate_only:
        ck = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
        norm = {k: v.numpy() for k, v in ck["norm"].items()}
        data = load_data(cfg, dist, ("Development", "Test"), norm)
        model = build(cfg, data.d_audio, data.d_video).to(dist.device)
        if dist.main:
            old = (
                json.loads((out / "summary.json").read_text())
                if (out / "summary.json").exists()
                else {}
            )
            extra = {
                k: v
                for k, v in old.items()
                if k
                in (
                    "config",
                    "hparams",
                    "model_source",
                    "train_wall_s",
                    "data",
                    "params",
                    "history",
                )
            }
            log_json(out, event="evaluate_only", command=command)
            test_and_write(cfg, model, data, out, dist.device, command, extra)
        return 0
    if (out / "last.pt").exists() and not cfg.resume:
        raise SystemExit(f"{out} holds a run (last.pt): pass --resume, or use another --out")
    seed_all(cfg.seed)
    t0 = time.time()
    data = load_data(cfg, dist, ("Train", "Development", "Test"))
    torch.manual_seed(cfg.seed)
    model = build(cfg, data.d_audio, data.d_video).to(dist.device)
    broadcast_model(model, dist)  # same seed on every rank; DDP broadcasts again at each stage
    hp = resolve(cfg, model)
    if dist.main:
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
        log_json(out, event="config", command=command, world=dist.world,
                 device=str(dist.device), hparams=hp, params=count_params(model))  # fmt: skip
        note = SYNTHETIC if model.modalities != "audio" else "CREMA-D audio only (no faces)"
        log_json(out, event="data", note=note, **data.counts,
                 pairing=hp["pairing"], audio_steps=data.frames // data.pool,
                 video_frames=data.tv, d_audio=data.d_audio, d_video=data.d_video)  # fmt: skip
    selection = train(cfg, hp, model, data, dist, out, cfg.progress)
    wall = round(time.time() - t0, 1)
    if dist.main:
        history = [
            json.loads(line)
            for line in (out / "log.jsonl").read_text().splitlines()
            if '"event": "epoch"' in line
        ]
        extra = {
            "config": dataclasses.asdict(cfg),
            "hparams": hp,
            "model_source": MODELS[cfg.model].source,
            "world": dist.world,
            "device": str(dist.device),
            "train_wall_s": wall,
            "params": count_params(model),
            "data": data.counts,
            "selection_per_stage": selection,
            "history": [
                {k: r[k] for k in ("stage", "epoch", "step", "loss", "select")} for r in history
            ],
        }
        test_and_write(cfg, model, data, out, dist.device, command, extra)
        log_json(out, event="done", train_wall_s=wall)
    dist.barrier()
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
