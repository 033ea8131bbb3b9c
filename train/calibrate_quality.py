"""Choose the quality thresholds of a bundle (``model.json`` -> ``quality``) on development data.

The runtime marks each present modality reliable or not (:mod:`emosdk.quality` measures,
:func:`emosdk.health.audio_unreliable` / :func:`~emosdk.health.video_unreliable` verdicts against
:class:`emosdk.quality.QualityRules`). This script picks the thresholds so that

(a) at least ``--min-clean-reliable`` (95 %) of the clean development inputs are reliable, and
(b) results marked reliable are as much more accurate than those marked unreliable as possible
    (the gap in accuracy, over clean and corrupted inputs together), with at least
    ``--min-unreliable`` of the inputs marked unreliable so that the gap is not a handful of
    files.

Development data, never the Test sets: CREMA-D partition ``P`` Development clips (audio) and the
FER2013 Training faces ``train_fusion`` held out of fusion training (faces), each clean and with
``--k`` corrupted copies drawn with this script's seed (``--seed``, training-side parameter
ranges of :mod:`train.fusion_data`, not the robustness benchmark's). Predictions are the
unimodal ones a user gets from ``Recognizer.predict(audio=...)`` / ``predict(face=...)``, through
the fusion model of the run's ``select`` fit (it never trained on these clips or faces).

The audio measures include ``audio_confidence`` and the face measures ``face_confidence``: the
top probability of the fusion's unimodal auxiliary head (``logits_audio`` / ``logits_video``),
as the runtime measures it (:func:`emosdk.quality.head_confidence`). ``--leave RULE ...`` keeps
rules at the runtime's value (off) instead of calibrating them.

Search: coordinate ascent over the thresholds, each from the 1st to 99th percentiles of its
measure (or off), starting with everything off, until no change improves the objective.
``min_detector_score`` cannot be measured on face crops (the detector does not run on them):
it keeps the runtime's default.

    python -m train.calibrate_quality --fusion-run runs/bundle/fusion \\
        --out runs/bundle/quality.json

Writes the thresholds, the development figures (reliable vs unreliable accuracy and share, per
corruption kind, beside the provisional defaults') and the command into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from emosdk import health
from emosdk.models.bundle import StreamParams
from emosdk.quality import QualityRules

from . import LABELS
from .fusion_data import (
    AUDIO_KINDS,
    FACE_KINDS,
    Case,
    PcmStore,
    audio_set,
    calib_split,
    face_set,
    fer_images,
    load_encoders,
    predict_cases,
    split_items,
    talker_pool,
    torch_fusion,
)
from .models import AuxFormerDeploy

logger = logging.getLogger("emosdk.train")


def rules_for(names: Sequence[str]) -> tuple[tuple[str, str, str], ...]:
    """(rule field, measure, "min" or "max") for each :class:`QualityRules` field named
    ``min_<measure>`` or ``max_<measure>`` whose measure is among ``names`` (the runtime's)."""
    out = []
    for f in dataclasses.fields(QualityRules):
        kind, _, measure = f.name.partition("_")
        if kind in ("min", "max") and measure in names:
            out.append((f.name, measure, kind))
    return tuple(out)


OFF = {"min": -1e9, "max": 1e9}


def passes(measures: np.ndarray, names: Sequence[str], rule: tuple, value: float) -> np.ndarray:
    _, measure, kind = rule
    x = measures[:, names.index(measure)]
    return x >= value if kind == "min" else x <= value


def gap_of(correct: np.ndarray, ok: np.ndarray) -> tuple[float, float, float]:
    """(reliable accuracy - unreliable accuracy, reliable accuracy, unreliable accuracy)."""
    r = correct[ok].mean() if ok.any() else np.nan
    u = correct[~ok].mean() if (~ok).any() else np.nan
    return float(r - u), float(r), float(u)


def search(
    measures: np.ndarray,
    names: Sequence[str],
    rules: tuple,
    correct: np.ndarray,
    clean: np.ndarray,
    min_clean_reliable: float,
    min_unreliable: float,
    rounds: int = 8,
) -> dict[str, float] | None:
    """Thresholds maximising the reliable - unreliable accuracy gap under the two constraints
    (see the module docstring). ``measures`` (N, M) in ``names`` order; ``correct``, ``clean``:
    (N,) bool. Returns rule field -> threshold (+-1e9 for rules left off), or None when no
    thresholds meet the constraints."""
    grids = []
    for rule in rules:
        x = measures[:, names.index(rule[1])]
        q = np.unique(np.percentile(x, np.arange(1, 100)))
        grids.append(np.concatenate([[OFF[rule[2]]], q]))
    value = [g[0] for g in grids]
    ok_each = [passes(measures, names, r, v) for r, v in zip(rules, value)]
    need_unrel = int(np.ceil(min_unreliable * len(correct)))

    def objective(ok: np.ndarray) -> float:
        if ok[clean].mean() < min_clean_reliable or (~ok).sum() < need_unrel or not ok.any():
            return -np.inf
        return gap_of(correct, ok)[0]

    best = objective(np.logical_and.reduce(ok_each))
    for _ in range(rounds):
        changed = False
        for j, rule in enumerate(rules):
            others = np.logical_and.reduce([o for i, o in enumerate(ok_each) if i != j])
            for v in grids[j]:
                cand = passes(measures, names, rule, v)
                score = objective(others & cand)
                if score > best + 1e-9:
                    best, value[j], ok_each[j], changed = score, float(v), cand, True
        if not changed:
            break
    if not np.isfinite(best):
        return None
    # a rule left off gets a value no measure reaches (QualityRules holds floats)
    return {
        r[0]: float(v) if abs(v) < 1e8 else float(np.sign(v) * 1e9) for r, v in zip(rules, value)
    }


def verdict(measures: np.ndarray, names: Sequence[str], rules: tuple, th: dict) -> np.ndarray:
    return np.logical_and.reduce([passes(measures, names, r, th[r[0]]) for r in rules])


def report(
    correct: np.ndarray, ok: np.ndarray, clean: np.ndarray, kinds: np.ndarray, kind_names
) -> dict:
    """Reliable vs unreliable figures: all inputs, corrupted only, clean share, per kind."""

    def split(sel: np.ndarray) -> dict:
        g, r, u = gap_of(correct[sel], ok[sel])
        n = int(sel.sum())
        return {
            "n": n,
            "accuracy": float(correct[sel].mean()) if n else None,
            "reliable": {"share": float(ok[sel].mean()) if n else None, "accuracy": r},
            "unreliable": {"share": float((~ok[sel]).mean()) if n else None, "accuracy": u},
            "gap": g,
        }

    out = {
        "all": split(np.ones(len(ok), bool)),
        "corrupted": split(~clean),
        "clean_reliable_share": float(ok[clean].mean()),
        "per_kind": {},
    }
    for k, name in enumerate(kind_names):
        sel = kinds == k
        if sel.any():
            out["per_kind"][name] = {
                "n": int(sel.sum()),
                "accuracy": float(correct[sel].mean()),
                "reliable_share": float(ok[sel].mean()),
            }
    return json.loads(json.dumps(out, default=float).replace("NaN", "null"))


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fusion-run", type=Path, required=True, help="a train_fusion --out folder")
    p.add_argument("--out", type=Path, required=True, help="the JSON to write")
    p.add_argument("--k", type=int, default=6, help="corrupted copies per clip and face")
    p.add_argument("--seed", type=int, default=3, help="corruption seed (not the benchmark's)")
    p.add_argument("--min-clean-reliable", type=float, default=0.95)
    p.add_argument("--min-unreliable", type=float, default=0.10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--face-encoder",
        type=Path,
        help="the face encoder to judge with (default: the fusion run's; a train.face_robust "
        "fine-tune of it for build_bundle --face-encoder-keeps)",
    )
    p.add_argument(
        "--leave",
        nargs="*",
        default=[],
        metavar="RULE",
        help="QualityRules fields to leave at the runtime's value (e.g. min_face_confidence)",
    )
    args = p.parse_args(argv)
    unknown = sorted(set(args.leave) - set(dataclasses.asdict(QualityRules())))
    if unknown:
        p.error(f"--leave: {unknown} are not QualityRules fields")
    command = "python -m train.calibrate_quality " + " ".join(shlex.quote(a) for a in argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    run = args.fusion_run
    cfg = json.loads((run / "config.json").read_text())
    stream = StreamParams(cfg["window_s"], cfg["hop_s"], cfg["video_fps"])
    ag, fg, stream = load_encoders(
        cfg["audio_encoder"], cfg["audio_frontend"], args.face_encoder or cfg["face_encoder"],
        cfg["face_params"],
        stream, args.threads,
    )  # fmt: skip
    root, cache = Path(cfg["data_root"]), Path(cfg["cache_dir"])
    items = split_items(cfg["partition"], root, cfg["extras"], cfg["limit"])
    store = PcmStore(None if cfg["limit"] else cache / "cremad_pcm_16000.npz", root)
    aset = audio_set(
        cache, "calib_dev", items["dev"], store, ag, stream, mode="predict", n_clean=1,
        k=args.k, seed=args.seed, talkers=talker_pool(items["final"], cfg["seed"]),
    )  # fmt: skip
    limit = max(1, cfg["limit"] // 2) if cfg["limit"] else 0
    tr_img, tr_y = fer_images("Training", root, limit)
    held = calib_split(tr_y, min(cfg["calib_faces"], len(tr_y) // 4), cfg["seed"])
    fset = face_set(
        cache, "calib_faces", tr_img[held], tr_y[held], fg, n_jitter=0, k=args.k, seed=args.seed
    )
    kwargs = json.loads((run / "fusion_config.json").read_text())
    model = AuxFormerDeploy(**kwargs)
    model.load_state_dict(torch.load(run / "select" / "fusion.pt", weights_only=False)["model"])
    fusion = torch_fusion(model)

    # audio only, every copy of every Development clip
    n_a, copies = len(aset.names), aset.copies
    todo = [Case(i, c, None, "", "audio_only") for i in range(n_a) for c in range(copies)]
    res = predict_cases(
        fusion, aset, fset, np.zeros(n_a, np.int64), stream, ag.params, ag.frames_per_step, todo
    )
    answered = res["pred"] >= 0  # no speech: no result, no verdict (as in the benchmark)
    y_a = np.repeat(aset.labels, copies)
    # the runtime's audio_confidence: the top probability of the audio auxiliary head
    a_names = (*aset.measure_names, "audio_confidence")
    a_measures = np.concatenate(
        [aset.measures.reshape(n_a * copies, -1), res["audio_confidence"][:, None]], axis=1
    )
    a = {
        "correct": (res["pred"] == y_a)[answered],
        "measures": a_measures[answered],
        "clean": np.tile(np.arange(copies) == 0, n_a)[answered],
        "kinds": aset.kind.reshape(-1)[answered],
        "no_speech": float(1 - answered.mean()),
    }
    # video only, every copy of every held-out face
    n_f, fcopies = len(fset.labels), fset.emb.shape[1]
    todo = [Case(i, None, c, "", "video_only") for i in range(n_f) for c in range(fcopies)]
    res = predict_cases(
        fusion, aset, fset, np.arange(n_f), stream, ag.params, ag.frames_per_step, todo
    )
    v_names = (*fset.measure_names, "face_confidence")
    v_measures = np.concatenate(
        [fset.measures.reshape(n_f * fcopies, -1), res["face_confidence"][:, None]], axis=1
    )
    v = {
        "correct": res["pred"] == np.repeat(fset.labels, fcopies),
        "measures": v_measures,
        "clean": np.tile(np.arange(fcopies) == 0, n_f),
        "kinds": fset.kind.reshape(-1),
    }
    chosen: dict[str, float] = {}
    dev: dict[str, dict] = {}
    kept: list[str] = []
    defaults = dataclasses.asdict(QualityRules())
    judge = {"audio": health.audio_unreliable, "video": health.video_unreliable}
    for modality, data, names, kinds in (
        ("audio", a, a_names, AUDIO_KINDS),
        ("video", v, v_names, FACE_KINDS),
    ):
        rules = rules_for(names)
        off = [r for r in rules if r[0] in args.leave]
        kept += [r[0] for r in off]
        rules = tuple(r for r in rules if r not in off)
        # a measure that does not vary here (the detector score of face crops) cannot be
        # calibrated: its rule keeps the runtime's value
        varies = [np.nanstd(data["measures"][:, names.index(r[1])]) > 0 for r in rules]
        kept += [r[0] for r, ok in zip(rules, varies) if not ok]
        rules = tuple(r for r, ok in zip(rules, varies) if ok)
        th = search(
            data["measures"], names, rules, data["correct"], data["clean"],
            args.min_clean_reliable, args.min_unreliable,
        )  # fmt: skip
        feasible = th is not None
        if not feasible:  # too few inputs to meet the constraints: keep the runtime's values
            th = {r[0]: defaults[r[0]] for r in rules}
        chosen.update(th)
        # the verdicts reported are the runtime's own (emosdk.health), not the search's copy
        rows = [dict(zip(names, map(float, m))) for m in data["measures"]]
        mine = QualityRules(**{**defaults, **th})
        ok = np.array([judge[modality](r, mine) is None for r in rows])
        ok_default = np.array([judge[modality](r, QualityRules()) is None for r in rows])
        dev[modality] = {
            "inputs": int(len(ok)),
            "measures": list(names),
            "feasible": feasible,
            # share of inputs where the search's vectorised rules agree with emosdk.health
            "search_agrees": float((ok == verdict(data["measures"], names, rules, th)).mean()),
            "chosen": report(data["correct"], ok, data["clean"], data["kinds"], kinds),
            "provisional_defaults": report(
                data["correct"], ok_default, data["clean"], data["kinds"], kinds
            ),
        }
        if modality == "audio":
            dev[modality]["no_speech_share"] = a["no_speech"]
        logger.info(
            "%s: %s -> gap %s (clean reliable %.3f); defaults gap %s",
            modality,
            th,
            dev[modality]["chosen"]["all"]["gap"],
            dev[modality]["chosen"]["clean_reliable_share"],
            dev[modality]["provisional_defaults"]["all"]["gap"],
        )
    quality = {k: round(float(chosen.get(k, val)), 6) for k, val in defaults.items()}
    out = {
        "quality": quality,
        "method": "coordinate ascent over percentiles of each measure: maximise the accuracy "
        "of reliable-marked minus unreliable-marked results over clean and corrupted "
        f"development inputs, with >= {args.min_clean_reliable:.0%} of clean inputs reliable and "
        f">= {args.min_unreliable:.0%} of the inputs unreliable; rules whose measure does not "
        f"vary on this data, or left with --leave, keep the runtime's value: {kept}",
        "development_data": {
            "audio": f"CREMA-D partition {cfg['partition']} Development ({n_a} clips), clean + "
            f"{args.k} corrupted copies each (seed {args.seed}), audio-only predictions",
            "video": f"FER2013 Training faces held out of fusion training ({n_f}), clean + "
            f"{args.k} corrupted copies each (seed {args.seed}), face-only predictions; the face "
            "encoder trained on these faces, so their clean accuracy is high",
            "fusion": str(run / "select" / "fusion.pt"),
            "face_encoder": str(fg.path),
            "labels": list(LABELS),
        },
        "development": dev,
        "command": command,
        "wall_s": round(time.time() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(json.dumps({"quality": quality, "gap": {m: dev[m]["chosen"]["all"] for m in dev}}))
    return out


if __name__ == "__main__":
    main()
