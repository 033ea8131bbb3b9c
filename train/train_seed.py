"""Train the seed default model (CPU) and write it as a bundle.

Three stages, each resumable from ``--out``:

1. face encoder: FER2013 Training (7 classes), selected on PublicTest;
2. audio encoder + classifier: CREMA-D partition ``--partition`` Train, selected on Development,
   reported on Test (perceived labels; log-mel from ``emosdk.features.log_mel``);
3. AuxFormerDeploy fusion on SYNTHETIC PAIRS: a CREMA-D clip paired with a FER2013 face of the same
   label (the window's Tv frames are jittered copies of ONE face image), encoders frozen; selected
   on Development clips + half of FER2013 PublicTest, reported on Test clips + the other half.

Then the three graphs are exported to ONNX, checked against torch with onnxruntime, and written with
``write_bundle``. Every figure from stage 3 comes from synthetic pairs and is labelled so. The
resumable stage loop, the audio stage and the augmentations are in :mod:`train.common`.

Usage (from the repository root)::

    python -m train.train_seed --out /tmp/emosdk_seed --bundle-out sdk/emosdk/models/bundled/default
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emosdk.features.audio import LogMelParams
from emosdk.features.face import FaceParams
from emosdk.metrics import classification_report
from emosdk.models.bundle import StreamParams

from . import FER_CLASSES, LABELS
from . import data as D
from .common import (
    AudioStageConfig,
    audio_stage,
    audio_window,
    augment_faces,
    class_weights,
    log_json,
    pair_faces,
    run_stage,
    seed_all,
)
from .models import AudioEncoder, AuxFormerDeploy, FaceEncoder, auxformer_loss, count_params


@dataclass
class Config:
    """Every option of the script, with its default (argparse reads them from here)."""

    out: str = "/tmp/emosdk_seed"  # checkpoints, logs and the exported ONNX files
    bundle_out: str = ""  # write the bundle here ("" = do not write one)
    data_root: str = str(D.DATA_ROOT)
    cache_dir: str = str(D.CACHE_DIR)  # "" = no feature cache
    partition: int = 1
    seed: int = 0
    threads: int = 2
    limit: int = 0  # >0: smoke run, at most this many clips per split and faces per class
    max_steps: int = 0  # >0: at most this many optimiser steps per stage
    # face encoder
    d_video: int = 128
    face_widths: str = "32,64,128,192"
    face_epochs: int = 14
    face_batch: int = 128
    face_lr: float = 3e-3
    # audio encoder
    d_audio: int = 128
    audio_layers: int = 3
    audio_heads: int = 4
    audio_epochs: int = 25
    audio_batch: int = 32
    audio_lr: float = 1e-3
    # fusion
    d_model: int = 64
    fusion_heads: int = 4
    fusion_cross: int = 2
    fusion_mem: int = 1
    fusion_epochs: int = 6
    fusion_batch: int = 64
    fusion_lr: float = 7.25e-4  # AuxFormer: 0.725e-3
    p_audio_off: float = 0.2  # AuxFormer optimised training: share of each batch without audio
    p_video_off: float = 0.2  # ... and without video
    max_frame_drop: float = 0.3  # per-sample rate of randomly masked steps/frames, U(0, this)
    audio_crops: int = 3  # precomputed random 3 s crops per training clip
    face_jitters: int = 4  # precomputed jittered copies per face (the frames of a window)
    # bundle
    name: str = "emosdk-av-seed"
    version: str = "0.1.0"
    opset: int = 18

    def audio_stage_config(self) -> AudioStageConfig:
        """The audio stage's options (:func:`train.common.audio_stage`)."""
        return AudioStageConfig(
            seed=self.seed,
            max_steps=self.max_steps,
            d_audio=self.d_audio,
            layers=self.audio_layers,
            heads=self.audio_heads,
            epochs=self.audio_epochs,
            batch=self.audio_batch,
            lr=self.audio_lr,
        )


# -----------------------------------------------------------------------------------------------
# face and audio embeddings of the frozen encoders (inputs of the fusion stage)


@torch.no_grad()
def face_embeddings(
    enc: FaceEncoder, faces: np.ndarray, jitters: int, seed: int, batch: int = 512
) -> np.ndarray:
    """Embeddings of ``jitters`` small-jitter copies of each face: (N, jitters, d_video).

    Copy 0 is the clean face; the others are shifted by up to 2 pixels, maybe flipped, with a
    slight brightness/contrast change, standing in for the frames of a short video window.
    """
    enc.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(faces)
    embs = np.zeros((len(faces), jitters, enc.embed.out_features), np.float32)
    for j in range(jitters):
        for s in range(0, len(x), batch):
            xb = x[s : s + batch]
            if j:
                xb = augment_faces(xb, gen, pad=2, flip=True)
            embs[s : s + batch, j] = enc(xb)[0].numpy()
    return embs


@torch.no_grad()
def audio_embeddings(enc: AudioEncoder, windows: np.ndarray, batch: int = 128) -> np.ndarray:
    """audio_emb of (N, frames, M) windows -> (N, steps, d_audio)."""
    enc.eval()
    return np.concatenate(
        [
            enc(torch.from_numpy(windows[s : s + batch])).numpy()
            for s in range(0, len(windows), batch)
        ]
    )


# -----------------------------------------------------------------------------------------------
# synthetic audio-visual pairs


def fusion_batch(
    a_emb: np.ndarray,
    v_emb: np.ndarray,
    tv: int,
    rng: np.random.Generator,
    p_audio_off: float,
    p_video_off: float,
    max_frame_drop: float,
) -> tuple[torch.Tensor, ...]:
    """Build masked fusion inputs for a batch of synthetic pairs.

    Args:
        a_emb: (B, Ta, Da) audio steps of each clip's window.
        v_emb: (B, J, Dv) jittered embeddings of each clip's paired face; the Tv frames of the
            window are drawn from these J copies.
        tv: frames per window.
        rng: randomness (modality dropout, frame drop, frame draws).
        p_audio_off, p_video_off: share of the batch with the whole modality zeroed.
        max_frame_drop: each sample masks a random U(0, max_frame_drop) share of its positions.
    """
    B, Ta, _ = a_emb.shape
    J = v_emb.shape[1]
    frames = rng.integers(0, J, (B, tv))
    video = v_emb[np.arange(B)[:, None], frames]  # (B, Tv, Dv)
    drop_a = rng.random((B, 1)) * max_frame_drop
    drop_v = rng.random((B, 1)) * max_frame_drop
    am = (rng.random((B, Ta)) >= drop_a).astype(np.float32)
    vm = (rng.random((B, tv)) >= drop_v).astype(np.float32)
    r = rng.random(B)
    am[r < p_audio_off] = 0.0
    vm[(r >= p_audio_off) & (r < p_audio_off + p_video_off)] = 0.0
    a = torch.from_numpy(a_emb * am[..., None])
    v = torch.from_numpy(video * vm[..., None])
    return a, torch.from_numpy(am), v, torch.from_numpy(vm)


@torch.no_grad()
def eval_fusion(
    model: AuxFormerDeploy,
    a_emb: np.ndarray,
    v_emb: np.ndarray,
    labels: np.ndarray,
    tv: int,
    seed: int,
) -> dict[str, float]:
    """Macro/micro-F1 on fixed synthetic pairs: AV, audio only (video masked), video only."""
    model.eval()
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, v_emb.shape[1], (len(a_emb), tv))
    video = v_emb[np.arange(len(a_emb))[:, None], frames]  # (N, Tv, Dv)
    res = {}
    for mode, a_on, v_on in (("av", 1.0, 1.0), ("audio_only", 1.0, 0.0), ("video_only", 0.0, 1.0)):
        preds = []
        for s in range(0, len(a_emb), 256):
            a = torch.from_numpy(a_emb[s : s + 256]) * a_on
            v = torch.from_numpy(video[s : s + 256]) * v_on
            am = torch.full(a.shape[:2], a_on)
            vm = torch.full(v.shape[:2], v_on)
            preds.append(model(a, am, v, vm)[0].argmax(-1).numpy())
        rep = classification_report(labels, np.concatenate(preds), LABELS)
        for k in ("macro_f1", "micro_f1", "n"):
            res[f"{mode}_{k}"] = rep[k]
    return res


# -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(
            flag, type=type(f.default), default=f.default, help=f"(default {f.default!r})"
        )
    return Config(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    command = "python -m train.train_seed " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("onnxscript").setLevel(logging.WARNING)
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    torch.set_num_threads(cfg.threads)
    seed_all(cfg.seed)
    root = Path(cfg.data_root)
    cache = Path(cfg.cache_dir) if cfg.cache_dir and not cfg.limit else None
    limit = cfg.limit or None
    audio_p, face_p, stream_p = LogMelParams(), FaceParams(), StreamParams()
    frames = audio_p.num_frames(int(round(stream_p.window_s * audio_p.sample_rate)))  # 298
    tv = int(round(stream_p.window_s * stream_p.video_fps))  # 15
    floor = float(np.log(audio_p.log_floor))
    gen = torch.Generator().manual_seed(cfg.seed)
    t_start = time.time()

    # ----- data ---------------------------------------------------------------------------------
    clips = D.load_cremad_partition(cfg.partition, root)
    split = {s: [c for c in clips if c.split == s] for s in ("Train", "Development", "Test")}
    if limit:
        split = {s: v[:limit] for s, v in split.items()}
    feats = D.logmel_cache(
        [c.name for s in split.values() for c in s], audio_p, root, cache_dir=cache
    )
    y_clip = {s: np.array([c.label for c in v]) for s, v in split.items()}
    fer_tr, fer_tr_y = D.load_fer2013("Training", face_p, root, limit, cache_dir=cache)
    fer_pt, fer_pt_y = D.load_fer2013("PublicTest", face_p, root, limit, cache_dir=cache)
    log_json(
        out,
        stage="data",
        cremad={s: len(v) for s, v in split.items()},
        fer={"Training": len(fer_tr), "PublicTest": len(fer_pt)},
    )

    # ----- stage 1: face encoder on FER2013 ------------------------------------------------------
    torch.manual_seed(cfg.seed)
    face = FaceEncoder(
        d_video=cfg.d_video,
        widths=tuple(int(w) for w in cfg.face_widths.split(",")),
        n_classes=len(FER_CLASSES),
    )
    face_w = class_weights(fer_tr_y, len(FER_CLASSES))
    x_tr, y_tr = torch.from_numpy(fer_tr), torch.from_numpy(fer_tr_y)

    def face_step(rng: np.random.Generator) -> torch.Tensor:
        idx = torch.from_numpy(rng.integers(0, len(x_tr), cfg.face_batch))
        xb = augment_faces(x_tr[idx], gen, pad=4, flip=True)
        return F.cross_entropy(face(xb)[1], y_tr[idx], weight=face_w, label_smoothing=0.1)

    def face_eval() -> dict:
        preds = np.concatenate(
            [
                face(torch.from_numpy(fer_pt[s : s + 512]))[1].argmax(-1).numpy()
                for s in range(0, len(fer_pt), 512)
            ]
        )
        m = classification_report(fer_pt_y, preds, FER_CLASSES)
        return {"publictest_acc": m["micro_f1"], "publictest_macro_f1": m["macro_f1"]}

    face_res = run_stage(
        out,
        "face",
        face,
        cfg.face_epochs,
        cfg.face_lr,
        max(1, len(x_tr) // cfg.face_batch),
        face_step,
        face_eval,
        "publictest_acc",
        gen,
        seed=cfg.seed,
        max_steps=cfg.max_steps,
    )
    face.eval()
    with torch.no_grad():
        face_final = face_eval()
    face_final["params"] = count_params(face)
    log_json(out, stage="face", final=face_final)

    # ----- stage 2: audio encoder on CREMA-D -----------------------------------------------------
    a_stage = audio_stage(
        cfg.audio_stage_config(), out, split, feats, y_clip, audio_p, frames, floor, gen
    )
    audio, audio_res, audio_final = a_stage.audio, a_stage.result, a_stage.final
    tr_mels, eval_windows = a_stage.train_mels, a_stage.eval_windows

    # ----- stage 3: AuxFormerDeploy fusion on synthetic pairs ------------------------------------
    for p in (*face.parameters(), *audio.parameters()):
        p.requires_grad_(False)
    rng_pre = np.random.default_rng([cfg.seed, 3])
    tr_windows = np.stack(
        [audio_window(m, frames, floor, rng_pre) for _ in range(cfg.audio_crops) for m in tr_mels]
    )
    a_tr = audio_embeddings(audio, tr_windows).reshape(
        cfg.audio_crops, len(tr_mels), -1, cfg.d_audio
    )
    del tr_windows
    a_dev, a_test = (audio_embeddings(audio, eval_windows[s]) for s in ("Development", "Test"))
    fer_tr_proj = D.fer_to_project(fer_tr_y)
    keep = fer_tr_proj >= 0
    v_tr = face_embeddings(face, fer_tr[keep], cfg.face_jitters, cfg.seed)
    v_tr_y = fer_tr_proj[keep]
    # FER2013 PublicTest (6 labels) split in two halves per class: one for selection, one for test
    fer_pt_proj = D.fer_to_project(fer_pt_y)
    half = np.zeros(len(fer_pt_proj), bool)
    for c in range(len(LABELS)):
        idx = np.flatnonzero(fer_pt_proj == c)
        half[idx[1::2]] = True
    v_pt = face_embeddings(face, fer_pt, cfg.face_jitters, cfg.seed + 1)
    sel_faces = np.flatnonzero((fer_pt_proj >= 0) & ~half)
    test_faces = np.flatnonzero((fer_pt_proj >= 0) & half)
    rng_pairs = np.random.default_rng([cfg.seed, 4])
    dev_pair = sel_faces[pair_faces(y_clip["Development"], fer_pt_proj[sel_faces], rng_pairs)]
    test_pair = test_faces[pair_faces(y_clip["Test"], fer_pt_proj[test_faces], rng_pairs)]
    v_dev, v_test = v_pt[dev_pair], v_pt[test_pair]
    log_json(
        out,
        stage="pairs",
        note="synthetic pairs",
        train_clips=len(tr_mels),
        train_faces=len(v_tr),
        dev_pairs=len(dev_pair),
        test_pairs=len(test_pair),
        dev_faces_distinct=len(set(dev_pair.tolist())),
        test_faces_distinct=len(set(test_pair.tolist())),
    )

    torch.manual_seed(cfg.seed + 2)
    fusion = AuxFormerDeploy(
        cfg.d_audio,
        cfg.d_video,
        n_classes=len(LABELS),
        d_model=cfg.d_model,
        n_heads=cfg.fusion_heads,
        n_cross=cfg.fusion_cross,
        n_mem=cfg.fusion_mem,
    )
    y_tr_clip = y_clip["Train"]

    def fusion_step(rng: np.random.Generator) -> torch.Tensor:
        idx = rng.integers(0, len(y_tr_clip), cfg.fusion_batch)
        crop = rng.integers(0, cfg.audio_crops, cfg.fusion_batch)
        faces = pair_faces(y_tr_clip[idx], v_tr_y, rng)
        a, am, v, vm = fusion_batch(
            a_tr[crop, idx],
            v_tr[faces],
            tv,
            rng,
            cfg.p_audio_off,
            cfg.p_video_off,
            cfg.max_frame_drop,
        )
        out_ = fusion(a, am, v, vm)
        return auxformer_loss(out_, torch.from_numpy(y_tr_clip[idx]), am, vm, label_smoothing=0.1)

    def fusion_eval() -> dict:
        m = eval_fusion(fusion, a_dev, v_dev, y_clip["Development"], tv, cfg.seed)
        m["dev_mean_macro_f1"] = float(
            np.mean([m[f"{k}_macro_f1"] for k in ("av", "audio_only", "video_only")])
        )
        return {
            f"synthetic_dev_{k}" if not k.startswith("dev_") else f"synthetic_{k}": v
            for k, v in m.items()
        }

    fusion_res = run_stage(
        out,
        "fusion",
        fusion,
        cfg.fusion_epochs,
        cfg.fusion_lr,
        max(1, len(y_tr_clip) // cfg.fusion_batch),
        fusion_step,
        fusion_eval,
        "synthetic_dev_mean_macro_f1",
        gen,
        seed=cfg.seed,
        max_steps=cfg.max_steps,
    )
    fusion.eval()
    fusion_final = {
        f"synthetic_test_{k}": v
        for k, v in eval_fusion(fusion, a_test, v_test, y_clip["Test"], tv, cfg.seed).items()
    }
    fusion_final["params"] = count_params(fusion)
    log_json(out, stage="fusion", note="synthetic pairs", final=fusion_final)
    train_s = round(time.time() - t_start, 1)

    # ----- export and bundle ---------------------------------------------------------------------
    from emosdk.export.bundle import write_bundle

    from .bundle import export_graphs

    graphs = export_graphs(audio, face, fusion, out / "onnx", audio_p, face_p, stream_p, cfg.opset)
    summary = {
        "command": command,
        "train_wall_s": train_s,
        "face": {**face_final, "selected_epoch": face_res["selected_epoch"]},
        "audio": {**audio_final, "selected_epoch": audio_res["selected_epoch"]},
        "fusion_synthetic_pairs": {**fusion_final, "selected_epoch": fusion_res["selected_epoch"]},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log_json(out, stage="done", train_wall_s=train_s)
    if cfg.bundle_out:
        bundle = write_bundle(
            cfg.bundle_out,
            name=cfg.name,
            version=cfg.version,
            labels=list(LABELS),
            graphs=graphs,
            audio=audio_p,
            face=face_p,
            stream=stream_p,
            data_card=data_card(cfg, split, fer_tr, fer_pt, v_tr, dev_pair, test_pair),
            metrics=metrics_card(summary, cfg),
            extra={
                "model_card": model_card(cfg, face_final, audio_final, fusion_final),
                "face_logits_labels": list(FER_CLASSES),
            },
        )
        size = sum(f.stat().st_size for f in bundle.iterdir())
        log_json(out, stage="bundle", path=str(bundle), size_bytes=size)


def data_card(cfg, split, fer_tr, fer_pt, v_tr, dev_pair, test_pair) -> dict:
    """What the model was trained and evaluated on."""
    return {
        "label_set": list(LABELS),
        "audio": {
            "corpus": "CREMA-D (ODbL 1.0 / DbCL 1.0), 16 kHz speech, acted, English, 91 actors",
            "labels": "perceived audio-visual consensus labels of the VAVL partition files "
            "(argmax of the six soft scores; no ties in the partition file)",
            "partition": cfg.partition,
            "train": f"partition {cfg.partition} Train ({len(split['Train'])} clips)",
            "selection": f"partition {cfg.partition} Development ({len(split['Development'])})",
            "test": f"partition {cfg.partition} Test ({len(split['Test'])} clips)",
            "speaker_independent": True,
            "window": "one 3 s window per clip; training: random crop/offset, evaluation: clip "
            "centred; shorter clips padded with digital silence (log floor)",
        },
        "face": {
            "corpus": "FER2013 (research use), 48x48 grayscale web images, 7 classes incl. "
            "surprise",
            "train": f"Training ({len(fer_tr)} faces, 7 classes)",
            "selection": f"PublicTest ({len(fer_pt)} faces); also the figure reported (no "
            "separate test: PrivateTest is held back)",
        },
        "fusion": {
            "synthetic_pairing": True,
            "pairing": "SYNTHETIC PAIRS: each CREMA-D clip is paired with a FER2013 face of the "
            "same project label (surprise faces dropped); the Tv=15 frames of a 3 s window are "
            f"drawn from {cfg.face_jitters} copies of ONE face image (clean + small shift, flip, "
            "brightness/contrast jitter). Face and voice come from different people; modalities "
            "are independent given the label, which real audio-visual data is not.",
            "train": f"partition {cfg.partition} Train clips x FER2013 Training faces "
            f"({len(v_tr)} faces), re-paired at every step, encoders frozen",
            "selection": f"partition {cfg.partition} Development clips x one half of FER2013 "
            f"PublicTest ({len(set(dev_pair.tolist()))} distinct faces)",
            "test": f"partition {cfg.partition} Test clips x the other half of FER2013 PublicTest "
            f"({len(set(test_pair.tolist()))} distinct faces)",
            "modality_dropout": f"per sample: audio off {cfg.p_audio_off}, video off "
            f"{cfg.p_video_off}; plus U(0, {cfg.max_frame_drop}) of steps/frames masked",
        },
        "real_audio_visual_evaluation": None,
    }


def metrics_card(summary: dict, cfg: Config) -> dict:
    """Every figure with the command that reproduces it."""
    cmd = summary["command"]
    f, a, s = summary["face"], summary["audio"], summary["fusion_synthetic_pairs"]
    p = cfg.partition
    m = {
        "fer2013_publictest_accuracy": {"value": f["publictest_acc"], "command": cmd},
        "fer2013_publictest_macro_f1": {
            "value": f["publictest_macro_f1"],
            "command": cmd,
            "note": "7 classes; PublicTest also selected the epoch",
        },
        f"cremad_p{p}_test_audio_macro_f1": {"value": a["test_macro_f1"], "command": cmd},
        f"cremad_p{p}_test_audio_micro_f1": {"value": a["test_micro_f1"], "command": cmd},
    }
    for mode in ("av", "audio_only", "video_only"):
        for k in ("macro_f1", "micro_f1"):
            m[f"synthetic_pairs_p{p}_test_{mode}_{k}"] = {
                "value": s[f"synthetic_test_{mode}_{k}"],
                "command": cmd,
                "note": "SYNTHETIC PAIRS (CREMA-D voice + FER2013 face of the same label)",
            }
    return m


def model_card(cfg: Config, face_final: dict, audio_final: dict, fusion_final: dict) -> dict:
    return {
        "intended_use": "Seed default model of emosdk: demos, integration, and a baseline for "
        "real-time six-class emotion recognition from a voice and a face. Research and "
        "development only.",
        "limits": [
            "Trained on acted English speech (CREMA-D) and web face images (FER2013); expect "
            "lower accuracy on spontaneous emotion, other languages, children, and other "
            "recording conditions.",
            "The fusion model never saw a real audio-visual recording: it was trained and "
            "evaluated on SYNTHETIC PAIRS, so its AV figures overstate what a real camera + "
            "microphone give. Only the audio figures (CREMA-D Test) and the face figures "
            "(FER2013 PublicTest) are on real single-modality data.",
            "Results are from one CREMA-D partition (of five) and one seed.",
            "Emotion recognition must not be used to make decisions about people (hiring, "
            "policing, credit, health).",
        ],
        "architecture": {
            "audio_encoder": f"2 stride-2 Conv1d + {cfg.audio_layers}-layer transformer, "
            f"d={cfg.d_audio}, {audio_final['params']} params (incl. pre-training head)",
            "face_encoder": f"VGG-style CNN widths {cfg.face_widths}, d={cfg.d_video}, "
            f"{face_final['params']} params",
            "fusion": f"AuxFormerDeploy d_model={cfg.d_model}, {cfg.fusion_heads} heads, "
            f"{cfg.fusion_cross} cross + {cfg.fusion_mem} memory layers per direction, "
            f"{fusion_final['params']} params",
        },
        "built_by": "python -m train.train_seed (see metrics[*].command)",
    }


if __name__ == "__main__":
    main()
