"""Helpers shared by the training scripts (``python -m train.<script>``), so that no script
imports another.

* logging and checkpoints: :func:`log_json`, :func:`save_state`, :func:`load_state`,
  :func:`save_logits`; seeding: :func:`seed_all`;
* optimisation: :func:`cosine_lr`, :func:`class_weights`, and :func:`run_stage`, the resumable
  stage loop of the seed pipeline (AdamW, warmup + cosine, per-epoch selection);
* windows, augmentation and pairing: :func:`window_offsets`, :func:`audio_window`,
  :func:`spec_augment`, :func:`augment_faces`, :func:`face_views` (test-time views),
  :func:`pair_faces`;
* the seed pipeline's audio stage (:func:`audio_stage`, used by ``train_seed`` and
  ``train_audio``);
* results in the format of ``python -m train.sweep``: :func:`aggregate` (mean and std over
  partitions), :func:`audio_metrics`, :func:`write_ensemble` (probability averages of runs) and
  :func:`summary_line`.

Metrics come from the runtime's :func:`emosdk.metrics.classification_report` (one implementation
for training, reports and ``emosdk-bench``).
"""

from __future__ import annotations

import json
import logging
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from emosdk.corruptions import motion_blur
from emosdk.features.audio import LogMelParams
from emosdk.features.face import FaceParams
from emosdk.metrics import classification_report
from emosdk.scores import softmax

from . import LABELS
from .models import AudioEncoder, count_params

logger = logging.getLogger("emosdk.train")

# -----------------------------------------------------------------------------------------------
# logging, checkpoints, seeding


def log_json(out: Path, **record: object) -> None:
    """Print one JSON log line and append it to ``out/log.jsonl``."""
    record = {"time": round(time.time(), 1), **record}
    line = json.dumps(record, default=float)
    print(line, flush=True)
    with open(out / "log.jsonl", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def save_state(path: Path, **state: object) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_state(path: Path) -> dict | None:
    """The state saved by :func:`save_state`, or None when ``path`` does not exist."""
    return torch.load(path, weights_only=False) if path.exists() else None


def save_logits(path: Path, split: str, names, y: np.ndarray, logits: dict[str, np.ndarray]):
    """Per-clip logits of one split, per condition, for ensembles (``train.ensemble``):
    ``{split}_names``, ``{split}_y`` and ``{split}_logits_{condition}`` (N, classes)."""
    arrays = {f"{split}_names": np.asarray(names), f"{split}_y": np.asarray(y, np.int64)}
    arrays |= {f"{split}_logits_{c}": np.asarray(z, np.float32) for c, z in logits.items()}
    if path.is_file():  # keep the other splits
        with np.load(path) as old:
            arrays = {k: old[k] for k in old.files if not k.startswith(f"{split}_")} | arrays
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def seed_all(seed: int) -> None:
    """Seed torch's and numpy's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)


# -----------------------------------------------------------------------------------------------
# optimisation: class weights, learning rate, the resumable stage loop

STAGE_SEEDS = {"face": 0, "audio": 1, "fusion": 2}
"""Offset of each seed-pipeline stage's generator seed."""


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse square-root frequency weights, mean 1 (helps macro-F1 on skewed classes)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = 1.0 / np.sqrt(np.maximum(counts, 1.0))
    return torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32)


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor at ``step``: linear warmup over ``warmup`` steps, then a cosine decay
    to 0 at ``total`` (a ``LambdaLR`` lambda)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def run_stage(
    out: Path,
    stage: str,
    model: torch.nn.Module,
    epochs: int,
    lr: float,
    batches_per_epoch: int,
    train_batch: Callable[[np.random.Generator], torch.Tensor],
    evaluate: Callable[[], dict],
    select_key: str,
    gen: torch.Generator,
    *,
    seed: int,
    max_steps: int = 0,
) -> dict:
    """Generic resumable loop: AdamW, warmup + cosine, per-epoch eval, best-state selection.

    ``train_batch(rng) -> loss`` runs the forward pass of one batch; ``evaluate() -> metrics``
    returns a dict holding ``select_key``. The best state is restored into ``model`` at the end.
    ``gen`` (the stage's augmentation generator) is reseeded here and checkpointed with the rest,
    so a resumed or a partly loaded run draws the same numbers as an uninterrupted one.
    ``seed`` seeds the stage's generators; ``max_steps`` > 0 stops after that many steps.

    Writes ``out/<stage>_last.pt`` after every epoch (resumable) and ``out/<stage>.pt`` (the
    selected state and the record) at the end; a finished stage is loaded, not trained again.
    """
    final = out / f"{stage}.pt"
    if final.exists():
        state = load_state(final)
        model.load_state_dict(state["model"])
        logger.info("%s: loaded finished stage from %s", stage, final)
        return state["metrics"]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    total = epochs * batches_per_epoch
    if max_steps:
        total = min(total, max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_lr(s, total, max(1, min(200, total // 20)))
    )
    rng = np.random.default_rng([seed, zlib.crc32(stage.encode())])
    gen.manual_seed(seed + STAGE_SEEDS[stage])
    epoch, step, best, best_state, history = 0, 0, -1.0, None, []
    last = load_state(out / f"{stage}_last.pt")
    if last is not None:
        model.load_state_dict(last["model"])
        opt.load_state_dict(last["opt"])
        sched.load_state_dict(last["sched"])
        rng.bit_generator.state = last["rng"]
        torch.set_rng_state(last["torch_rng"])
        gen.set_state(last["gen"])
        epoch, step, best, best_state, history = (
            last["epoch"],
            last["step"],
            last["best"],
            last["best_state"],
            last["history"],
        )
        logger.info("%s: resumed at epoch %d", stage, epoch)
    t0 = time.time()
    while step < total:
        model.train()
        pbar = tqdm(range(batches_per_epoch), desc=f"{stage} {epoch + 1}/{epochs}", leave=False)
        losses = []
        for _ in pbar:
            if step >= total:
                break
            loss = train_batch(rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            pbar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        epoch += 1
        model.eval()
        with torch.no_grad():
            metrics = evaluate()
        score = metrics[select_key]
        if score > best:
            best = score
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), **metrics})
        log_json(
            out,
            stage=stage,
            epoch=epoch,
            step=step,
            loss=float(np.mean(losses)),
            lr=sched.get_last_lr()[0],
            elapsed_s=round(time.time() - t0, 1),
            **metrics,
        )
        save_state(
            out / f"{stage}_last.pt",
            model=model.state_dict(),
            opt=opt.state_dict(),
            sched=sched.state_dict(),
            rng=rng.bit_generator.state,
            torch_rng=torch.get_rng_state(),
            gen=gen.get_state(),
            epoch=epoch,
            step=step,
            best=best,
            best_state=best_state,
            history=history,
        )
    model.load_state_dict(best_state)
    best_epoch = max(history, key=lambda h: h[select_key])
    result = {
        "selected_epoch": best_epoch["epoch"],
        "selection": {select_key: best},
        "history": history,
    }
    save_state(final, model=best_state, metrics=result)
    return result


# -----------------------------------------------------------------------------------------------
# windows, augmentation, pairing


def window_offsets(T: int, frames: int, rng: np.random.Generator | None) -> tuple[int, int, int]:
    """(source start, destination start, length) of a clip of ``T`` frames in a window of
    ``frames``: a random crop / offset with ``rng`` (training), else centred."""
    if T >= frames:
        s = int(rng.integers(0, T - frames + 1)) if rng is not None else (T - frames) // 2
        return s, 0, frames
    d = int(rng.integers(0, frames - T + 1)) if rng is not None else (frames - T) // 2
    return 0, d, T


def audio_window(
    m: np.ndarray, frames: int, floor: float, rng: np.random.Generator | None
) -> np.ndarray:
    """Cut or pad a clip's log-mel (T, M) to one stream window of ``frames`` frames.

    With ``rng`` the crop / pad offset is random (training), else the clip is centred.
    Padding is digital silence (the log floor), as in a stream window longer than the speech.
    """
    src, dst, n = window_offsets(len(m), frames, rng)
    if n == frames:
        return m[src : src + frames]
    out = np.full((frames, m.shape[1]), floor, np.float32)
    out[dst : dst + n] = m
    return out


def spec_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random gain (+-6 dB), one time mask and one frequency mask per example. x: (B, T, M)."""
    B, T, M = x.shape
    floor = x.min()
    x = torch.maximum(x + (torch.rand(B, 1, 1, generator=gen) - 0.5) * 2.76, floor)
    for i in range(B):
        t0 = int(torch.randint(0, T, (1,), generator=gen))
        x[i, t0 : t0 + int(torch.randint(0, T // 8, (1,), generator=gen))] = floor
        f0 = int(torch.randint(0, M, (1,), generator=gen))
        x[i, :, f0 : f0 + int(torch.randint(0, M // 8, (1,), generator=gen))] = floor
    return x


def augment_faces(x: torch.Tensor, gen: torch.Generator, pad: int, flip: bool) -> torch.Tensor:
    """Random shift (reflect pad + crop), optional horizontal flip, brightness/contrast jitter.

    x: (B, 1, S, S) normalised faces -> same shape.
    """
    B, _, S, _ = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (B, 1, S+2p, S+2p)
    off = torch.randint(0, 2 * pad + 1, (B, 2), generator=gen)
    out = torch.stack(
        [xp[i, :, oy : oy + S, ox : ox + S] for i, (oy, ox) in enumerate(off.tolist())]
    )
    if flip:
        mask = torch.rand(B, generator=gen) < 0.5
        out[mask] = out[mask].flip(-1)
    contrast = 1.0 + (torch.rand(B, 1, 1, 1, generator=gen) - 0.5) * 0.4
    bright = (torch.rand(B, 1, 1, 1, generator=gen) - 0.5) * 0.4
    return out * contrast + bright


TTA = {
    "none": "the face as it is",
    "flip": "mean probabilities of the face and its mirror image",
    "10crop": "mean over the face and 4 copies shifted by 2 px, each also mirrored (10 views)",
}


def face_views(x: np.ndarray, tta: str, shift: int = 2) -> list[np.ndarray]:
    """The test-time views of faces ``x`` (N, 1, S, S) for one ``tta`` kind."""
    if tta not in TTA:
        raise ValueError(f"tta must be one of {TTA}, got {tta!r}")
    if tta == "none":
        return [x]
    views = [x]
    if tta == "10crop":
        S = x.shape[-1]
        pad = np.pad(x, ((0, 0), (0, 0), (shift, shift), (shift, shift)), mode="reflect")
        for dy, dx in ((-shift, 0), (shift, 0), (0, -shift), (0, shift)):
            views.append(pad[:, :, shift + dy : shift + dy + S, shift + dx : shift + dx + S])
    return views + [v[..., ::-1] for v in views]


def pair_faces(
    clip_labels: np.ndarray, face_labels: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """For each clip, the index of a random face with the same project label."""
    by_label = {c: np.flatnonzero(face_labels == c) for c in range(len(LABELS))}
    return np.array([rng.choice(by_label[int(c)]) for c in clip_labels])


# -----------------------------------------------------------------------------------------------
# the seed pipeline's audio stage (train_seed; train_audio trains it alone)


@dataclass
class AudioStageConfig:
    """Options of :func:`audio_stage`; the defaults are ``python -m train.train_seed``'s."""

    seed: int = 0
    max_steps: int = 0  # >0: at most this many optimiser steps
    d_audio: int = 128  # --d-audio
    layers: int = 3  # --audio-layers
    heads: int = 4  # --audio-heads
    epochs: int = 25  # --audio-epochs
    batch: int = 32  # --audio-batch
    lr: float = 1e-3  # --audio-lr


@dataclass
class AudioStage:
    """The trained audio encoder with its stage record and the windows it was evaluated on."""

    audio: AudioEncoder
    result: dict  # run_stage's record: selected epoch, selection score, history
    final: dict  # Development / Test macro- and micro-F1 of the selected state, parameters
    train_mels: list[np.ndarray]  # log-mel (T, M) of the Train clips
    eval_windows: dict[str, np.ndarray]  # split -> centred windows (N, frames, M)
    logits: dict[str, np.ndarray]  # "Development" / "Test" -> classifier logits (N, classes)


def audio_logits(audio: AudioEncoder, windows: np.ndarray, batch: int = 128) -> np.ndarray:
    """Classifier logits of (N, frames, M) windows -> (N, classes)."""
    audio.eval()
    with torch.no_grad():
        return np.concatenate(
            [
                audio.classify(audio(torch.from_numpy(windows[i : i + batch]))).numpy()
                for i in range(0, len(windows), batch)
            ]
        )


def audio_stage(
    cfg: AudioStageConfig,
    out: Path,
    split: dict[str, list],
    feats: dict[str, np.ndarray],
    y_clip: dict[str, np.ndarray],
    audio_p: LogMelParams,
    frames: int,
    floor: float,
    gen: torch.Generator,
) -> AudioStage:
    """Train (or load, when ``out/audio.pt`` exists) the audio encoder + classifier on CREMA-D
    Train with random 3 s crops, gain / time / frequency masking, inverse-sqrt class weights and
    label smoothing 0.1; select on Development macro-F1; evaluate Development and Test."""
    torch.manual_seed(cfg.seed + 1)
    audio = AudioEncoder(
        n_mels=audio_p.n_mels,
        d_audio=cfg.d_audio,
        n_layers=cfg.layers,
        n_heads=cfg.heads,
        n_classes=len(LABELS),
    )
    train_frames = np.concatenate([feats[c.name] for c in split["Train"]])
    audio.set_normalization(
        torch.from_numpy(train_frames.mean(0)), torch.from_numpy(train_frames.std(0))
    )
    del train_frames
    tr_mels = [feats[c.name] for c in split["Train"]]
    audio_w = class_weights(y_clip["Train"], len(LABELS))
    eval_windows = {
        s: np.stack([audio_window(feats[c.name], frames, floor, None) for c in v])
        for s, v in split.items()
    }

    def audio_step(rng: np.random.Generator) -> torch.Tensor:
        idx = rng.integers(0, len(tr_mels), cfg.batch)
        xb = torch.from_numpy(np.stack([audio_window(tr_mels[i], frames, floor, rng) for i in idx]))
        logits = audio.classify(audio(spec_augment(xb, gen)))
        return F.cross_entropy(
            logits, torch.from_numpy(y_clip["Train"][idx]), weight=audio_w, label_smoothing=0.1
        )

    def audio_eval() -> dict:
        preds = audio_logits(audio, eval_windows["Development"]).argmax(-1)
        m = classification_report(y_clip["Development"], preds, LABELS)
        return {"dev_macro_f1": m["macro_f1"], "dev_micro_f1": m["micro_f1"]}

    audio_res = run_stage(
        out,
        "audio",
        audio,
        cfg.epochs,
        cfg.lr,
        max(1, len(tr_mels) // cfg.batch),
        audio_step,
        audio_eval,
        "dev_macro_f1",
        gen,
        seed=cfg.seed,
        max_steps=cfg.max_steps,
    )
    logits = {s: audio_logits(audio, eval_windows[s]) for s in ("Development", "Test")}
    test, dev = (
        classification_report(y_clip[s], logits[s].argmax(-1), LABELS)
        for s in ("Test", "Development")
    )
    audio_final = {
        "test_macro_f1": test["macro_f1"],
        "test_micro_f1": test["micro_f1"],
        "test_n": test["n"],
        "dev_macro_f1": dev["macro_f1"],
        "dev_micro_f1": dev["micro_f1"],
        "params": count_params(audio),
    }
    log_json(out, stage="audio", final=audio_final)
    return AudioStage(audio, audio_res, audio_final, tr_mels, eval_windows, logits)


# -----------------------------------------------------------------------------------------------
# results in the format of train.sweep: aggregates over partitions, ensembles

KEYS = ("macro_f1", "micro_f1", "accuracy", "uar")
"""Metrics aggregated per condition."""


def mean_std(values: list[float]) -> dict:
    v = np.asarray(values, np.float64)
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "n": len(v), "values": v.tolist()}


def aggregate(runs: Path, models: list[str], partitions: list[int]) -> dict:
    """Per model: mean/std over partitions of each condition's metrics and masking curve."""
    results = {}
    for model in models:
        found = {
            p: json.loads((runs / f"{model}_p{p}" / "test_metrics.json").read_text())
            for p in partitions
            if (runs / f"{model}_p{p}" / "test_metrics.json").is_file()
        }
        if not found:
            continue
        ms = list(found.values())
        conds = {
            c: {k: mean_std([m["conditions"][c][k] for m in ms]) for k in KEYS}
            for c in ms[0]["conditions"]
        }
        masking = {}
        for kind, pts in ms[0]["masking"]["curves"].items():
            masking[kind] = [
                {"masked": pt["masked"]}
                | {
                    k: mean_std([m["masking"]["curves"][kind][i][k] for m in ms])
                    for k in ("macro_f1", "micro_f1")
                }
                for i, pt in enumerate(pts)
            ]
        results[model] = {
            "partitions": sorted(found),
            "synthetic_pairs": any(m["synthetic_pairs"] for m in ms),
            "conditions": conds,
            "masking": masking,
        }
    return {
        "note": "mean and sample std (ddof=1) over CREMA-D partitions; conditions with a face "
        "are on SYNTHETIC PAIRS (CREMA-D voice + FER2013 face of the same label)",
        "models": results,
    }


REAL_AUDIO = "CREMA-D Test audio only (real data)"


def audio_metrics(model: str, partition: int, command: str, y, pred, extra: dict) -> dict:
    """A Test report of audio-only predictions in train.sweep's test_metrics.json format."""
    return {
        "model": model,
        "partition": partition,
        "split": "Test",
        "command": command,
        "synthetic_pairs": False,
        "note": REAL_AUDIO,
        **extra,
        "conditions": {
            "audio_only": {"data": REAL_AUDIO, **classification_report(y, pred, LABELS)}
        },
        "masking": {"curves": {}},
    }


def member_probs(
    folder: Path, split: str, condition: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(names, labels, softmax probabilities) of one run folder's ``split`` logits."""
    path = folder / "logits.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no logits (train the run, or re-run train.train --evaluate-only)"
        )
    with np.load(path) as z:
        key = f"{split}_logits_{condition}"
        if key not in z.files:
            raise KeyError(f"{path} has no {key!r} (has {sorted(z.files)})")
        return z[f"{split}_names"], z[f"{split}_y"], softmax(z[key])


def ensemble_partition(
    members: list[str], partition: int, condition: str = "audio_only", split: str = "Test"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(names, labels, mean probabilities) of the members' runs on one partition."""
    loaded = [member_probs(Path(f"{m}_p{partition}"), split, condition) for m in members]
    names, y, _ = loaded[0]
    for m, (n, yy, _) in zip(members, loaded, strict=True):
        if not (np.array_equal(n, names) and np.array_equal(yy, y)):
            raise ValueError(
                f"partition {partition}: {m} holds other {split} clips than {members[0]}"
            )
    return names, y, np.mean([p for _, _, p in loaded], 0)


def write_ensemble(
    name: str, members: list[str], partitions: list[int], out_runs: Path, command: str,
    condition: str = "audio_only",
) -> dict:  # fmt: skip
    """test_metrics.json (and probs.npz) of the ensemble for every partition where all members
    exist -> ``out_runs/name_pP``; returns train.sweep's aggregate over those partitions."""
    done, dev_scores = [], []
    for part in partitions:
        if not all((Path(f"{m}_p{part}") / "logits.npz").is_file() for m in members):
            continue
        names, y, probs = ensemble_partition(members, part, condition)
        out = out_runs / f"{name}_p{part}"
        out.mkdir(parents=True, exist_ok=True)
        extra = {
            "members": [f"{m}_p{part}" for m in members],
            "ensemble": f"mean of the members' softmax probabilities ({condition} logits)",
        }
        try:  # the Development figure, on which ensembles are compared
            _, y_dev, p_dev = ensemble_partition(members, part, condition, "Development")
        except KeyError:
            pass
        else:
            dev = classification_report(y_dev, p_dev.argmax(-1), LABELS)
            extra["dev"] = {k: dev[k] for k in ("macro_f1", "micro_f1", "uar")}
            dev_scores.append(extra["dev"])
        tm = audio_metrics(name, part, command, y, probs.argmax(-1), extra)
        (out / "test_metrics.json").write_text(json.dumps(tm, indent=2))
        np.savez(out / "probs.npz", Test_names=names, Test_y=y, Test_probs=probs)
        done.append(part)
    res = aggregate(out_runs, [name], done)
    if done and len(dev_scores) == len(done):
        res["models"][name]["development"] = {
            k: float(np.mean([d[k] for d in dev_scores])) for k in ("macro_f1", "micro_f1")
        }
    return res


def summary_line(name: str, r: dict) -> str:
    """One JSON line of an aggregated model: audio-only micro-/macro-F1 mean, std and values
    over the partitions (and the Development means, when known)."""
    line = {"model": name, "partitions": r["partitions"]}
    if "development" in r:
        line |= {f"dev_{k}": round(v, 4) for k, v in r["development"].items()}
    for k in ("micro_f1", "macro_f1"):
        c = r["conditions"]["audio_only"][k]
        line |= {k: round(c["mean"], 4), f"{k}_std": round(c["std"], 4)}
        line[f"{k}_values"] = [round(v, 4) for v in c["values"]]
    return json.dumps(line)


# ----- face crops shared by the face scripts (train.face_robust, train.evaluate_face) -----


def normalise(imgs: np.ndarray, fp: FaceParams) -> np.ndarray:
    """uint8 BGR faces (N, S, S, 3) of the encoder's size -> (N, 1, S, S) float32, as
    :func:`emosdk.features.face.normalize_face` (grey, then (g - mean) / std)."""
    import cv2

    if imgs.shape[1:3] != (fp.size, fp.size):
        raise ValueError(f"faces must be {fp.size} px, got {imgs.shape[1:3]}")
    code = cv2.COLOR_BGR2GRAY if fp.color_order == "bgr" else cv2.COLOR_RGB2GRAY
    g = np.stack([cv2.cvtColor(im, code) for im in imgs]).astype(np.float32) / 255.0
    return ((g - fp.mean) / fp.std)[:, None]


def blurred(imgs: np.ndarray) -> np.ndarray:
    """The faces under motion blur over 15 % of their width at 45 degrees (the benchmark's
    severity 3)."""
    return np.stack([motion_blur(im, 0.15 * im.shape[1], 45.0) for im in imgs])
