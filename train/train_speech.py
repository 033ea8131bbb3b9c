"""Fine-tune the Whisper tiny.en audio branch on the stream's windows (CREMA-D, RAVDESS, EmoDB).

One run trains :class:`train.whisper.WhisperAudioBranch` (the pretrained encoder cut after
``--blocks`` blocks, a learned layer mix, 2x pooling, the projection to ``d_audio`` and a
training-only classifier on mean + std pooling) with a fixed schedule, and scores the last
epoch on the Test speakers through the windows ``Recognizer.predict`` feeds the audio encoder.

Data per run:

* ``--partition K``: CREMA-D partition K (perceived labels): Train to train, Development logged
  each epoch (for the record; nothing is selected on it), Test scored at the end.
* ``--shipped``: the default bundle's recipe: every CREMA-D speaker except partition 1's Test
  speakers, plus RAVDESS and EmoDB (``--exclude ravdess`` or ``--exclude emodb`` leaves a corpus
  out and scores it: leave-one-corpus-out). Scored on partition 1 Test and on the other corpora.

Recipe (the defaults of :class:`Config`): random 3 s stream windows (a longer clip cropped, a
shorter one placed at random in zeros), waveform augmentation (speed 0.88-1.12, gain -30..+6 dB,
white/pink/brown noise or babble of other training clips at 0..30 dB SNR, synthetic reverberation
RT60 0.15-1.0 s, telephone band, clipping), SpecAugment-style masks on the Whisper log-mel; AdamW,
encoder learning rate 20x below the new layers', warmup then cosine decay; cross-entropy with
inverse-sqrt class weights and label smoothing 0.1. The first 5% of the steps train only the new
layers (the pretrained ones wait, then warm up), and the two convolutions stay frozen.

Runs are resumable: ``last.pt`` is written every ``--save-every`` steps and at each epoch end;
rerunning the same command continues from it. Progress goes to ``log.jsonl`` in ``--out``.

    python -m train.train_speech --partition 1 --out runs/speech/ft/p1
    python -m train.train_speech --shipped --out runs/speech/shipped
    python -m train.train_speech --shipped --exclude ravdess --out runs/speech/loco_ravdess
    python -m train.train_speech report runs/speech/ft/p* --out docs/results/speech.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import LABELS
from .speech_data import (
    Augment,
    Utterance,
    features,
    label_counts,
    load_pcm,
    spec_mask,
    train_window,
)
from .speech_run import (
    Config,
    build_branch,
    class_weights,
    predict_logits,
    run_data,
    scores,
)
from .whisper import WhisperAudioBranch

logger = logging.getLogger("emosdk.train")


def make_batch(
    cfg: Config,
    utts: list[Utterance],
    pcm: dict[str, np.ndarray],
    idx: np.ndarray,
    rng: np.random.Generator,
    augment: Augment,
    babble: list[np.ndarray],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-mel (B, 300, 80), labels (B,)) of augmented stream windows."""
    mels = []
    for i in idx:
        x = pcm[utts[i].name]
        if cfg.augment:
            x = augment(x, rng, babble)
        m = features(train_window(x, rng))
        mels.append(spec_mask(m, rng) if cfg.spec_masks else m)
    y = torch.tensor([utts[i].label for i in idx])
    return torch.from_numpy(np.stack(mels)), y


def save(path: Path, **state: object) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def log_line(out: Path, **record: object) -> None:
    record = {"time": round(time.time(), 1), **record}
    line = json.dumps(record, default=float)
    logger.info("%s", line)
    with open(out / "log.jsonl", "a", encoding="utf-8") as f:
        f.write(line + "\n")


@torch.no_grad()
def frozen_states(
    branch: WhisperAudioBranch,
    utts: list[Utterance],
    pcm: dict[str, np.ndarray],
    seed: int,
    batch: int = 16,
) -> torch.Tensor:
    """The pretrained layers' states of one clean stream window per clip, float16
    (N, layers, 150, 384): what the probe phase trains the new layers on."""
    branch.eval()
    rng = np.random.default_rng([seed, 7])
    out = []
    for s in range(0, len(utts), batch):
        mels = [features(train_window(pcm[u.name], rng)) for u in utts[s : s + batch]]
        layers = branch.layers(torch.from_numpy(np.stack(mels)))
        out.append(torch.stack(layers, dim=1).half())
    return torch.cat(out)


def probe_phase(
    cfg: Config,
    branch: WhisperAudioBranch,
    utts: list[Utterance],
    pcm: dict[str, np.ndarray],
    weights: torch.Tensor,
    dev: list[Utterance] | None,
) -> None:
    """Train the layer mix, projection and head on the frozen encoder first (linear probing then
    fine-tuning: the pretrained layers then start from a head that already fits, instead of
    being pushed around by a random one). Saved as ``probe.pt``; a rerun loads it."""
    path = cfg.out / "probe.pt"
    if path.exists():
        branch.load_state_dict(torch.load(path, weights_only=False)["model"])
        logger.info("loaded the probe phase from %s", path)
        return
    t0 = time.time()
    states = frozen_states(branch, utts, pcm, cfg.seed)
    log_line(cfg.out, probe_states=list(states.shape), s=round(time.time() - t0, 1))
    y = torch.tensor([u.label for u in utts])
    params = [p for n, p in branch.named_parameters() if not n.startswith("encoder.")]
    opt = torch.optim.AdamW(params, lr=cfg.probe_lr, weight_decay=cfg.weight_decay)
    batch = 32
    per_epoch = max(1, len(utts) // batch)
    total = cfg.probe_epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / total))
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.probe_epochs):
        branch.train()
        order = torch.randperm(len(utts), generator=gen)
        losses = []
        for k in range(per_epoch):
            idx = order[k * batch : (k + 1) * batch]
            layers = list(states[idx].float().unbind(dim=1))
            logits = branch.classify(branch.from_layers(layers))
            loss = F.cross_entropy(
                logits, y[idx], weight=weights, label_smoothing=cfg.label_smoothing
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        record = {"probe_epoch": epoch + 1, "loss": float(np.mean(losses))}
        if dev is not None and epoch + 1 == cfg.probe_epochs:
            d = scores(dev, predict_logits(branch, dev, pcm))
            record |= {"dev_macro_f1": d["macro_f1"], "dev_micro_f1": d["micro_f1"]}
        log_line(cfg.out, **record)
    save(path, model=branch.state_dict())


def train(cfg: Config) -> dict:
    """Train (or resume) one run and write ``result.json`` and ``test_logits.npz`` in ``out``."""
    torch.set_num_threads(cfg.threads)
    cfg.out.mkdir(parents=True, exist_ok=True)
    done = cfg.out / "result.json"
    if done.exists():
        logger.info("%s exists: the run is finished", done)
        return json.loads(done.read_text())
    train_utts, evals = run_data(cfg)
    pcm = load_pcm(train_utts + [u for v in evals.values() for u in v], cfg.cache_dir)
    babble = [pcm[u.name] for u in train_utts]
    augment = Augment(**cfg.augment_params)
    logger.info("training on %d clips %s", len(train_utts), label_counts(train_utts))
    torch.manual_seed(cfg.seed)
    branch = build_branch(cfg)
    weights = class_weights(np.array([u.label for u in train_utts]), len(LABELS))
    if cfg.probe_epochs and not (cfg.out / "last.pt").exists():
        probe_phase(cfg, branch, train_utts, pcm, weights, evals.get("dev"))
    enc_params = [p for p in branch.encoder.parameters() if p.requires_grad]
    new_params = [p for n, p in branch.named_parameters() if not n.startswith("encoder.")]
    opt = torch.optim.AdamW(
        [
            {"params": enc_params, "lr": cfg.lr_encoder},
            {"params": new_params, "lr": cfg.lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = max(1, len(train_utts) // cfg.batch)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warmup = max(1, int(cfg.warmup * total))

    def lr_scale(step: int, start: int = 0) -> float:
        if step < start:
            return 0.0
        if step < start + warmup:
            return (step - start + 1) / warmup
        done = (step - start - warmup) / max(1, total - start - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * done))

    # the pretrained layers wait until the new ones have settled (linear probing, then fine-tuning)
    enc_start = int(cfg.head_only * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, [lambda s: lr_scale(s, enc_start), lambda s: lr_scale(s)]
    )
    step, history = 0, []
    last = cfg.out / "last.pt"
    if last.exists():
        state = torch.load(last, weights_only=False)
        branch.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, history = state["step"], state["history"]
        log_line(cfg.out, resumed_at=step, of=total)
    (cfg.out / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str) + "\n")

    def checkpoint() -> None:
        save(
            last,
            model=branch.state_dict(),
            opt=opt.state_dict(),
            sched=sched.state_dict(),
            step=step,
            history=history,
            config=asdict(cfg),
        )

    t0, losses = time.time(), []
    while step < total:
        epoch = step // steps_per_epoch
        # the epoch's order and each step's draws depend only on (seed, epoch, step): a resumed
        # run draws what an uninterrupted one would
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_utts))
        k = step % steps_per_epoch
        idx = order[k * cfg.batch : (k + 1) * cfg.batch]
        rng = np.random.default_rng([cfg.seed, epoch, k, 1])
        branch.train()
        x, y = make_batch(cfg, train_utts, pcm, idx, rng, augment, babble)
        logits = branch.classify(branch(x))
        loss = F.cross_entropy(logits, y, weight=weights, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(branch.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        losses.append(loss.item())
        if step % 25 == 0:
            log_line(
                cfg.out,
                step=step,
                of=total,
                loss=float(np.mean(losses[-25:])),
                lr=sched.get_last_lr(),
                s_per_step=round((time.time() - t0) / len(losses), 3),
            )
        end_of_epoch = step % steps_per_epoch == 0 or step == total
        if end_of_epoch and "dev" in evals:
            dev = scores(evals["dev"], predict_logits(branch, evals["dev"], pcm))
            history.append({"epoch": epoch + 1, "step": step, "dev": dev})
            log_line(
                cfg.out,
                epoch=epoch + 1,
                dev_macro_f1=dev["macro_f1"],
                dev_micro_f1=dev["micro_f1"],
                mix=torch.softmax(branch.layer_logits, 0).tolist(),
            )
        if end_of_epoch or step % cfg.save_every == 0:
            checkpoint()
    result = {"config": json.loads((cfg.out / "config.json").read_text()), "history": history}
    logits = {}
    for name, utts in evals.items():
        logits[name] = predict_logits(branch, utts, pcm)
        result[name] = scores(utts, logits[name])
        log_line(
            cfg.out, eval=name, macro_f1=result[name]["macro_f1"], micro_f1=result[name]["micro_f1"]
        )
    result["layer_mix"] = torch.softmax(branch.layer_logits, 0).tolist()
    result["train_clips"] = len(train_utts)
    result["train_counts"] = label_counts(train_utts)
    result["train_s"] = round(time.time() - t0, 1)
    np.savez(
        cfg.out / "logits.npz",
        **{f"{k}_logits": v for k, v in logits.items()},
        **{f"{k}_names": np.array([u.name for u in evals[k]]) for k in evals},
        **{f"{k}_labels": np.array([u.label for u in evals[k]]) for k in evals},
    )
    torch.save({"model": branch.state_dict(), "config": asdict(cfg)}, cfg.out / "model.pt")
    done.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def report(folders: list[Path]) -> dict:
    """Mean and std of Test macro-F1 and micro-F1 over finished partition runs."""
    runs = {}
    for f in folders:
        r = json.loads((f / "result.json").read_text())
        runs[str(r["config"]["partition"])] = {
            "folder": str(f),
            "test_macro_f1": r["test"]["macro_f1"],
            "test_micro_f1": r["test"]["micro_f1"],
            "test_n": r["test"]["n"],
            "dev_macro_f1": r["history"][-1]["dev"]["macro_f1"] if r["history"] else None,
            "layer_mix": r["layer_mix"],
        }
    out = {"partitions": runs}
    for k in ("test_macro_f1", "test_micro_f1"):
        v = np.array([r[k] for r in runs.values()])
        out[k] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    return out


def parse(argv: list[str]) -> Config:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(Config):
        if f.name in ("augment_params",):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if f.name == "n_blocks":
            flag = "--blocks"
        if isinstance(default, bool):
            p.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default
            )
        elif f.name == "exclude":
            p.add_argument(flag, dest=f.name, nargs="*", default=(), choices=["ravdess", "emodb"])
        else:
            p.add_argument(flag, dest=f.name, type=type(default), default=default)
    p.add_argument("--augment-json", default="", help="JSON overrides of Augment's fields")
    args = vars(p.parse_args(argv))
    extra = args.pop("augment_json")
    cfg = Config(**args, augment_params=json.loads(extra) if extra else {})
    cfg.exclude = tuple(cfg.exclude)
    if cfg.exclude and not cfg.shipped:
        p.error("--exclude needs --shipped (partition runs train on CREMA-D alone)")
    return cfg


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if argv[:1] == ["report"]:
        p = argparse.ArgumentParser(description="five-partition summary")
        p.add_argument("folders", type=Path, nargs="+")
        p.add_argument("--out", type=Path)
        a = p.parse_args(argv[1:])
        res = report(a.folders)
        res["command"] = "python -m train.train_speech " + " ".join(argv)
        text = json.dumps(res, indent=2)
        print(text)
        if a.out:
            a.out.write_text(text + "\n")
        return 0
    cfg = parse(argv)
    res = train(cfg)
    print(
        json.dumps(
            {
                k: res[k]["macro_f1"]
                for k in res
                if isinstance(res[k], dict) and "macro_f1" in res[k]
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
