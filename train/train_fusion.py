"""Train the bundle's fusion model (AuxFormerDeploy) on the embeddings of given encoders, with
corruption augmentation, on SYNTHETIC PAIRS (a CREMA-D voice with a FER2013 face of the same
label).

The encoders are ONNX files (any audio encoder with its front-end parameters, any face encoder);
their embeddings are computed as the runtime computes them and cached
(:mod:`train.fusion_data`). Two fits, each resumable from ``--out``:

1. ``select``: trains on the CREMA-D clips of partition ``--partition``'s Train speakers, picks
   the epoch on its Development clips x one half of FER2013 PublicTest (the mean macro-F1 of AV,
   audio only and video only, clean and corrupted);
2. ``final``: the shipped fusion, trained for that many epochs on every labelled clip of every
   speaker except the partition's Test speakers (the last epoch is kept).

Both are evaluated on the Test clips x the other half of PublicTest, clean and corrupted, AV /
audio only / video only; the corruptions are this pipeline's (training-side parameters, seed
``--eval-seed``), not the robustness benchmark's. FER2013 Training faces for the fusion leave out
``--calib-faces`` of them for the quality thresholds (``python -m train.calibrate_quality``).

Usage (from the repository root; the current default bundle's encoders)::

    python -m train.train_fusion --out runs/bundle/fusion \\
        --audio-encoder sdk/emosdk/models/bundled/default/audio_encoder.onnx \\
        --audio-frontend sdk/emosdk/models/bundled/default/model.json \\
        --face-encoder sdk/emosdk/models/bundled/default/face_encoder.onnx

Writes ``select/`` and ``final/`` (run_stage checkpoints: ``fusion.pt``), ``fusion_config.json``
(the module's arguments), ``summary.json`` (every figure, the data, the encoders and the
command) and ``log.jsonl``.
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

from emosdk.models.bundle import StreamParams, sha256_file

from . import LABELS
from .common import log_json, run_stage, seed_all
from .data import DATA_ROOT
from .fusion_data import (
    AUDIO_KINDS,
    FACE_KINDS,
    PcmStore,
    calib_split,
    eval_pairs,
    evaluate,
    face_halves,
    face_set,
    fer_images,
    headline,
    load_encoders,
    ort_session,
    split_items,
    talker_pool,
    torch_fusion,
)
from .fusion_data import audio_set as make_audio_set
from .models import AuxFormerDeploy, auxformer_loss, count_params
from .models.layers import presence

logger = logging.getLogger("emosdk.train")


@dataclass
class Config:
    """Every option (argparse reads them from here)."""

    out: str = "runs/bundle/fusion"
    audio_encoder: str = ""  # audio encoder ONNX (required)
    audio_frontend: str = ""  # JSON: front-end params, a model.json (its "audio"), or a report
    face_encoder: str = ""  # face encoder ONNX (required)
    face_params: str = ""  # JSON: face crop params or a model.json ("" = defaults, graph size)
    cache_dir: str = "runs/bundle/cache"
    data_root: str = str(DATA_ROOT)
    partition: int = 1
    extras: bool = True  # also clips outside the partition file with a single summaryTable vote
    window_s: float = 3.0
    hop_s: float = 0.5
    video_fps: float = 5.0
    seed: int = 0  # model initialisation, batches, pairing
    aug_seed: int = 1  # corruption and window draws of the training copies
    eval_seed: int = 2  # corruption draws of the Development and Test copies
    audio_clean: int = 2  # clean stream windows per training clip
    audio_k: int = 3  # corrupted windows per training clip
    face_jitter: int = 2  # jittered copies per training face (nearby frames)
    face_k: int = 3  # corrupted copies per training face
    eval_k: int = 3  # corrupted copies per Development / Test clip and face
    calib_faces: int = 2500  # FER2013 Training faces held out of fusion training (calibration)
    d_model: int = 64
    heads: int = 4
    cross: int = 2
    mem: int = 1
    epochs: int = 15  # of the select fit; the final fit trains for the epoch it selects
    batch: int = 64
    lr: float = 7.25e-4  # AuxFormer: 0.725e-3
    label_smoothing: float = 0.1
    p_audio_off: float = 0.2  # AuxFormer optimised training: share without audio
    p_video_off: float = 0.2  # ... and without video
    max_frame_drop: float = 0.3  # each sample masks U(0, this) of its steps / frames
    p_clean_audio: float = 0.4  # share of training windows that are clean
    p_clean_face: float = 0.4  # share of training faces that are clean (or jittered frames)
    p_same_frame: float = 0.5  # of those, share whose frames are one copy repeated
    threads: int = 1
    limit: int = 0  # >0: smoke run, at most this many clips per split and faces per class
    max_steps: int = 0  # >0: at most this many optimiser steps per fit
    final: bool = True  # --no-final: the select fit alone (ablations)
    # distillation of the audio-only behaviour from an earlier fusion graph on the same audio
    # encoder (ONNX, its audio-only output with the video masked): "" = off
    audio_teacher: str = ""
    audio_kd_weight: float = 1.0  # weight of the distillation term against the AuxFormer loss
    audio_kd_temperature: float = 2.0

    def fusion_kwargs(self, d_audio: int, d_video: int) -> dict:
        return {
            "d_audio": d_audio,
            "d_video": d_video,
            "n_classes": len(LABELS),
            "d_model": self.d_model,
            "n_heads": self.heads,
            "n_cross": self.cross,
            "n_mem": self.mem,
        }


def prepare(cfg: Config) -> dict:
    """Encoders, items, and every embedding set (computed once, cached)."""
    audio_g, face_g, stream = load_encoders(
        cfg.audio_encoder, cfg.audio_frontend, cfg.face_encoder, cfg.face_params,
        StreamParams(cfg.window_s, cfg.hop_s, cfg.video_fps), cfg.threads,
    )  # fmt: skip
    cache = Path(cfg.cache_dir)
    root = Path(cfg.data_root)
    items = split_items(cfg.partition, root, cfg.extras, cfg.limit)
    store = PcmStore(None if cfg.limit else cache / "cremad_pcm_16000.npz", root)
    talkers = talker_pool(items["final"], cfg.seed)
    common = {"store": store, "graph": audio_g, "stream": stream, "talkers": talkers}
    sets = {
        "train": make_audio_set(
            cache,
            "train",
            items["final"],
            mode="stream",
            n_clean=cfg.audio_clean,
            k=cfg.audio_k,
            seed=cfg.aug_seed,
            **common,
        ),
    }
    for name in ("dev", "test"):
        sets[name] = make_audio_set(
            cache, name, items[name], mode="predict", n_clean=1, k=cfg.eval_k, seed=cfg.eval_seed,
            **common,
        )  # fmt: skip
    limit = max(1, cfg.limit // 2) if cfg.limit else 0
    tr_img, tr_y = fer_images("Training", root, limit)
    pt_img, pt_y = fer_images("PublicTest", root, limit)
    faces_tr = face_set(
        cache, "fer_train", tr_img, tr_y, face_g, n_jitter=cfg.face_jitter, k=cfg.face_k,
        seed=cfg.aug_seed,
    )  # fmt: skip
    faces_pt = face_set(
        cache, "fer_publictest", pt_img, pt_y, face_g, n_jitter=0, k=cfg.eval_k,
        seed=cfg.eval_seed,
    )  # fmt: skip
    held = calib_split(tr_y, min(cfg.calib_faces, len(tr_y) // 4), cfg.seed)
    half = face_halves(pt_y)
    dev_pair, test_pair = eval_pairs(sets["dev"].labels, sets["test"].labels, pt_y, cfg.seed)
    return {
        "audio_graph": audio_g,
        "face_graph": face_g,
        "stream": stream,
        "items": items,
        "talkers": talkers,
        "sets": sets,
        "faces_train": faces_tr,
        "faces_pt": faces_pt,
        "calib_held": held,
        "pt_half": half,
        "dev_pair": dev_pair,
        "test_pair": test_pair,
    }


def make_batch(
    cfg: Config,
    rng: np.random.Generator,
    rows: np.ndarray,
    seqs: np.ndarray,
    masks: np.ndarray,
    missing: np.ndarray,
    labels: np.ndarray,
    n_clean: int,
    faces: np.ndarray,
    face_by_label: list[np.ndarray],
    n_jitter: int,
    tv: int,
) -> tuple[torch.Tensor, ...]:
    """One batch of synthetic pairs with clean or corrupted copies and modality dropout.

    Audio: a clean stream window (``p_clean_audio``) or a corrupted one; a window the runtime
    would find silent is masked (the runtime never feeds it). Video: the paired face's clean and
    jittered copies (``p_clean_face``; one copy repeated over the slots with ``p_same_frame``,
    else a copy drawn per slot) or one corrupted copy over every slot. Then AuxFormer's
    optimised training (audio off / video off shares) and U(0, max_frame_drop) of the
    remaining positions masked.
    """
    B = cfg.batch
    idx = rows[rng.integers(0, len(rows), B)]
    k = seqs.shape[1] - n_clean
    clean = rng.random(B) < cfg.p_clean_audio
    copy = np.where(clean, rng.integers(0, n_clean, B), n_clean + rng.integers(0, max(k, 1), B))
    copy = np.minimum(copy, seqs.shape[1] - 1)
    a = seqs[idx, copy].astype(np.float32)
    am = masks[idx, copy].astype(np.float32) * ~missing[idx, copy][:, None]
    y = labels[idx]
    f = np.array([face_by_label[c][rng.integers(0, len(face_by_label[c]))] for c in y])
    n_copies = faces.shape[1]
    clean_f = rng.random(B) < cfg.p_clean_face
    same = rng.random(B) < cfg.p_same_frame
    fc = np.empty((B, tv), np.int64)
    for b in range(B):
        if clean_f[b] or n_copies == 1 + n_jitter:
            fc[b] = rng.integers(0, 1 + n_jitter) if same[b] else rng.integers(0, 1 + n_jitter, tv)
        else:
            fc[b] = rng.integers(1 + n_jitter, n_copies)
    v = faces[f[:, None], fc].astype(np.float32)  # (B, Tv, Dv)
    drop_a = rng.random((B, 1)) * cfg.max_frame_drop
    drop_v = rng.random((B, 1)) * cfg.max_frame_drop
    am = am * (rng.random(am.shape) >= drop_a)
    vm = (rng.random((B, tv)) >= drop_v).astype(np.float32)
    r = rng.random(B)
    am[r < cfg.p_audio_off] = 0.0
    vm[(r >= cfg.p_audio_off) & (r < cfg.p_audio_off + cfg.p_video_off)] = 0.0
    # a sample left with nothing (silent audio, video dropped) gets its video back
    empty = (am.sum(1) == 0) & (vm.sum(1) == 0)
    vm[empty] = 1.0
    a *= am[..., None]
    v *= vm[..., None]
    return (
        torch.from_numpy(a),
        torch.from_numpy(am.astype(np.float32)),
        torch.from_numpy(v),
        torch.from_numpy(vm),
        torch.from_numpy(y),
    )


def audio_teacher(cfg: Config, d_audio: int, tv: int):
    """``--audio-teacher``: a function (audio (B, Ta, d), audio_mask (B, Ta)) -> the teacher
    graph's audio-only logits (B, C) (its video masked, as the runtime runs it without a face);
    None when off. The teacher must take this audio encoder's embeddings (same width)."""
    if not cfg.audio_teacher:
        return None
    sess = ort_session(cfg.audio_teacher, cfg.threads)
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    d_video = shapes["video"][-1]
    if shapes["audio"][-1] != d_audio or not isinstance(d_video, int):
        raise SystemExit(
            f"--audio-teacher {cfg.audio_teacher}: audio width {shapes['audio'][-1]} (this "
            f"encoder's is {d_audio}) and a fixed video width are needed"
        )

    def teach(a: np.ndarray, am: np.ndarray) -> np.ndarray:
        feeds = {"audio": a, "audio_mask": am, "video": np.zeros((len(a), tv, d_video), np.float32),
                 "video_mask": np.zeros((len(a), tv), np.float32)}  # fmt: skip
        logits = sess.run(["logits"], feeds)[0]
        logits[am.sum(1) == 0] = 0.0  # nothing to hear: no target (and no NaN from the graph)
        return np.nan_to_num(logits, nan=0.0, posinf=0.0, neginf=0.0)

    return teach


def audio_kd_loss(
    outputs: tuple[torch.Tensor, ...],
    teacher_logits: np.ndarray,
    audio_mask: torch.Tensor,
    video_mask: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """KL(teacher || student) at ``temperature`` (times T^2) on the student's heads that see the
    audio alone: the audio auxiliary head wherever audio is present, and the main head where the
    video is masked (the two heads the runtime averages for an audio-only window)."""
    _, logits_av, logits_a, _ = outputs
    t = torch.log_softmax(torch.from_numpy(teacher_logits) / temperature, dim=-1)
    pa = presence(audio_mask)
    a_only = pa * (1.0 - presence(video_mask))

    def kl(logits: torch.Tensor) -> torch.Tensor:
        s = torch.log_softmax(logits / temperature, dim=-1)
        return (t.exp() * (t - s)).sum(-1) * temperature**2

    n = pa.sum().clamp(min=1.0)
    return ((pa * kl(logits_a)).sum() + (a_only * kl(logits_av)).sum()) / n


def fit(cfg: Config, d: dict, phase: str, epochs: int, out: Path) -> tuple[AuxFormerDeploy, dict]:
    """One fit of the fusion (``select``: chosen on Development; ``final``: last epoch)."""
    aset = d["sets"]["train"]
    names = {it.name for it in d["items"][phase]}
    rows = np.flatnonzero(np.isin(aset.names, list(names)))
    seqs, masks = aset.fixed()
    ftr = d["faces_train"]
    use = ~d["calib_held"]
    face_by_label = [np.flatnonzero(use & (ftr.labels == c)) for c in range(len(LABELS))]
    tv = int(round(cfg.window_s * cfg.video_fps))
    torch.manual_seed(cfg.seed + 2)
    model = AuxFormerDeploy(**cfg.fusion_kwargs(d["audio_graph"].d, d["face_graph"].d))
    gen = torch.Generator().manual_seed(cfg.seed)

    teacher = audio_teacher(cfg, d["audio_graph"].d, tv)

    def step(rng: np.random.Generator) -> torch.Tensor:
        a, am, v, vm, y = make_batch(
            cfg, rng, rows, seqs, masks, aset.missing, aset.labels, aset.n_clean, ftr.emb,
            face_by_label, ftr.n_jitter, tv,
        )  # fmt: skip
        out = model(a, am, v, vm)
        loss = auxformer_loss(out, y, am, vm, cfg.label_smoothing)
        if teacher is not None:
            loss = loss + cfg.audio_kd_weight * audio_kd_loss(
                out, teacher(a.numpy(), am.numpy()), am, vm, cfg.audio_kd_temperature
            )
        return loss

    epoch = {"n": 0}

    def ev() -> dict:
        if phase == "final":  # no selection: the last epoch is kept
            epoch["n"] += 1
            return {"epoch_order": epoch["n"]}
        m = evaluate(
            torch_fusion(model), d["sets"]["dev"], d["faces_pt"], d["dev_pair"], d["stream"],
            d["audio_graph"].params, d["audio_graph"].frames_per_step,
        )  # fmt: skip
        return {f"dev_{k}": v for k, v in headline(m).items()}

    out.mkdir(parents=True, exist_ok=True)
    res = run_stage(
        out,
        "fusion",
        model,
        epochs,
        cfg.lr,
        max(1, len(rows) // cfg.batch),
        step,
        ev,
        "dev_selection_mean_macro_f1" if phase == "select" else "epoch_order",
        gen,
        seed=cfg.seed,
        max_steps=cfg.max_steps,
    )
    res["train_clips"] = len(rows)
    res["train_faces"] = int(use.sum())
    return model, res


def test_metrics(cfg: Config, d: dict, model: AuxFormerDeploy, split: str = "test") -> dict:
    pair = d["test_pair"] if split == "test" else d["dev_pair"]
    return evaluate(
        torch_fusion(model), d["sets"][split], d["faces_pt"], pair, d["stream"],
        d["audio_graph"].params, d["audio_graph"].frames_per_step,
    )  # fmt: skip


def data_card(cfg: Config, d: dict, res: dict) -> dict:
    """What the fusion was trained, selected and evaluated on (SYNTHETIC PAIRS)."""
    items, sets = d["items"], d["sets"]
    n_summary = sum(it.source == "summary" for it in items["final"])
    p = cfg.partition
    return {
        "synthetic_pairing": True,
        "pairing": "SYNTHETIC PAIRS: each CREMA-D clip is paired with a FER2013 face of the same "
        "project label (surprise faces dropped); face and voice come from different people, so "
        "the modalities are independent given the label, which real audio-visual data is not. "
        f"Training windows take their Tv={int(round(cfg.window_s * cfg.video_fps))} frames from "
        f"the face's clean copy and {cfg.face_jitter} jittered copies (nearby frames) or one "
        "corrupted copy; evaluation repeats one face over every slot, as predict(face=...) does.",
        "audio_train": f"every labelled CREMA-D clip of the speakers outside partition {p}'s Test "
        f"split ({len(items['final'])} clips: partition {p} Train and Development with their "
        f"perceived labels, plus {n_summary} clips outside the partition file whose perceived "
        "audio-visual vote in summaryTable.csv (MultiModalVote) names one class)",
        "audio_windows": f"training: {cfg.audio_clean} random 3 s stream windows per clip plus "
        f"{cfg.audio_k} corrupted ones; evaluation: the clip as Recognizer.predict places it "
        f"(centred in zeros, or whole when longer) plus {cfg.eval_k} corrupted copies",
        "face_train": f"FER2013 Training faces of the six labels ({int((~d['calib_held']).sum())}"
        f"; {int(d['calib_held'].sum())} held out for the quality calibration), clean, "
        f"{cfg.face_jitter} jittered and {cfg.face_k} corrupted copies each",
        "selection": f"epoch chosen by a fit on partition {p} Train speakers only "
        f"({res['select']['train_clips']} clips), on partition {p} Development "
        f"({len(sets['dev'].names)} clips) x one half of FER2013 PublicTest "
        f"({len(set(d['dev_pair'].tolist()))} distinct faces), mean macro-F1 of AV, audio only "
        "and video only, clean and corrupted; the shipped fit then trains on all its clips for "
        "that many epochs",
        "test": f"partition {p} Test ({len(sets['test'].names)} clips, speakers never trained on) "
        f"x the other half of FER2013 PublicTest ({len(set(d['test_pair'].tolist()))} distinct "
        "faces)",
        "modality_dropout": f"per sample: audio off {cfg.p_audio_off}, video off "
        f"{cfg.p_video_off}; plus U(0, {cfg.max_frame_drop}) of steps/frames masked",
        "augmentation": f"audio: {', '.join(AUDIO_KINDS)}; faces: {', '.join(FACE_KINDS)} "
        f"(emosdk.corruptions functions, training-side parameter ranges, seeds {cfg.aug_seed} "
        f"(training) and {cfg.eval_seed} (Development / Test); clean windows "
        f"{cfg.p_clean_audio:.0%}, clean faces {cfg.p_clean_face:.0%} of each batch)",
    } | (
        {
            "audio_distillation": f"the audio-only heads (audio auxiliary head; main head where "
            f"the video is masked) also learn the audio-only output of {cfg.audio_teacher} "
            f"(SHA-256 {sha256_file(Path(cfg.audio_teacher))}): KL at temperature "
            f"{cfg.audio_kd_temperature}, weight {cfg.audio_kd_weight}"
        }
        if cfg.audio_teacher
        else {}
    )


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(flag, type=type(f.default), default=f.default)
    return Config(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_args(argv)
    command = "python -m train.train_fusion " + " ".join(shlex.quote(a) for a in argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    torch.set_num_threads(cfg.threads)
    seed_all(cfg.seed)
    t0 = time.time()
    d = prepare(cfg)
    ag, fg = d["audio_graph"], d["face_graph"]
    log_json(
        out,
        stage="data",
        note="SYNTHETIC PAIRS",
        **{f"{k}_clips": len(v) for k, v in d["items"].items()},
        fer_train=len(d["faces_train"].labels),
        fer_calib=int(d["calib_held"].sum()),
        fer_publictest=len(d["faces_pt"].labels),
        embed_s=round(time.time() - t0, 1),
    )
    model_s, res_s = fit(cfg, d, "select", cfg.epochs, out / "select")
    epochs = int(res_s["selected_epoch"])
    if cfg.final:
        model_f, res_f = fit(cfg, d, "final", epochs, out / "final")
    else:  # an ablation: the select fit stands for the final one
        model_f, res_f = model_s, {**res_s, "note": "--no-final: the select fit"}
    kwargs = cfg.fusion_kwargs(ag.d, fg.d)
    (out / "fusion_config.json").write_text(json.dumps(kwargs, indent=2))
    figures = {
        "test_final": test_metrics(cfg, d, model_f),
        "test_select": test_metrics(cfg, d, model_s),
        "dev_select": test_metrics(cfg, d, model_s, "dev"),
    }
    res = {"select": res_s, "final": res_f}
    summary = {
        "command": command,
        "note": "SYNTHETIC PAIRS (CREMA-D voice + FER2013 face of the same label)",
        "config": dataclasses.asdict(cfg),
        "encoders": {
            "audio_encoder": {
                "file": str(ag.path),
                "sha256": ag.sha256,
                "input": ag.input,
                "output": ag.output,
                "d": ag.d,
                "frames_per_step": ag.frames_per_step,
            },
            "face_encoder": {
                "file": str(fg.path),
                "sha256": fg.sha256,
                "input": fg.input,
                "outputs": fg.outputs,
                "d": fg.d,
            },
        },
        "audio": ag.params.to_dict(),
        "face": fg.params.to_dict(),
        "stream": dataclasses.asdict(d["stream"]),
        "fusion": {"kwargs": kwargs, "params": count_params(model_f)},
        "selected_epoch": epochs,
        "select_history": res_s["history"],
        "data_card": data_card(cfg, d, res),
        "headline": {k: headline(v) for k, v in figures.items()},
        "metrics": figures,
        "cache": {k: v.meta["folder"] for k, v in d["sets"].items()}
        | {"fer_train": d["faces_train"].meta["folder"], "fer_pt": d["faces_pt"].meta["folder"]},
        "wall_s": round(time.time() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    log_json(out, stage="done", headline=summary["headline"], wall_s=summary["wall_s"])
    return summary


if __name__ == "__main__":
    main()
