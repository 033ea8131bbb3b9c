"""Smoke tests of train/train.py (every paper model, resume, DDP, --evaluate-only) and
train/sweep.py, on the real corpora.

Reads CREMA-D and FER2013 from ../shared/data (or $EMOSDK_DATA) and fails if they are missing:
the point is to run the real loaders, front-ends and the bundled face encoder end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from train.data import DATA_ROOT as DATA  # ../shared/data beside the checkout, or $EMOSDK_DATA
from train.paper_models import MODELS, build_model

ROOT = Path(__file__).resolve().parents[2]
SMOKE = [
    "--size", "smoke", "--limit", "6", "--max-steps", "1", "--batch", "4", "--cache-dir", "",
    "--threads", "1", "--no-progress", "--data-root", str(DATA),
]  # fmt: skip
METRIC_KEYS = {"n", "accuracy", "macro_f1", "micro_f1", "uar", "per_class", "confusion"}
CONDITIONS = {"av": {"av", "audio_only", "video_only"}, "audio": {"audio_only"}}
TIMINGS: dict[str, float] = {}


def require_data() -> None:
    assert (DATA / "cremad" / "labels" / "partition_1.csv").is_file(), f"CREMA-D missing in {DATA}"
    assert (DATA / "cremad" / "audio").is_dir(), f"CREMA-D audio missing in {DATA}"
    assert (DATA / "fer2013" / "manifest.csv").is_file(), f"FER2013 missing in {DATA}"


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def leaves(obj: object):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from leaves(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from leaves(v)
    else:
        yield obj


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """run(name) -> out dir of a one-step smoke run of the model (in-process, cached)."""
    from train.train import main

    base, done = tmp_path_factory.mktemp("smoke"), {}

    def run(name: str, *extra: str) -> Path:
        if name not in done:
            require_data()
            out = base / name
            t0 = time.time()
            assert main(["--model", name, "--out", str(out), *SMOKE, *extra]) == 0
            TIMINGS[name] = round(time.time() - t0, 1)
            done[name] = out
        return done[name]

    yield run
    print("\nsmoke wall seconds per model:", json.dumps(TIMINGS))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_smoke_every_model(name: str, smoke_run) -> None:
    out = smoke_run(name)
    model = build_model(name, 224 if name == "hussain" else 64, 128, 6, "smoke")
    recs = records(out)
    trained = [r for r in recs if r["event"] in ("epoch", "partial_epoch")]
    assert [r["stage"] for r in trained] == list(model.stages), trained
    assert all(r["step"] == 1 for r in trained)
    events = [r["event"] for r in recs]
    assert events[:2] == ["config", "data"] and events[-2:] == ["test", "done"]
    assert ("synthetic pairs" in recs[1]["note"]) is (model.modalities != "audio")

    for f in ("last.pt", "best.pt", "config.json", "summary.json", "test_metrics.json"):
        assert (out / f).is_file(), f
    for f in ["last.pt", "best.pt"] + [f"best_{s}.pt" for s in model.stages]:
        state = torch.load(out / f, map_location="cpu", weights_only=True)
        kinds = {type(x) for x in leaves(state)}
        assert kinds <= {torch.Tensor, int, float, str, bool, type(None)}, (f, kinds)
    last = torch.load(out / "last.pt", weights_only=True)
    assert {"model", "opt", "sched", "rng", "epoch", "step", "best"} <= set(last)
    assert last["step"] == 1 and last["stage_idx"] == len(model.stages) - 1

    m = json.loads((out / "test_metrics.json").read_text())
    conds = CONDITIONS.get(model.modalities, {"video_only"})
    assert set(m["conditions"]) == conds
    for c, rep in m["conditions"].items():
        assert METRIC_KEYS <= set(rep), c
        assert rep["n"] == 6 and np.array(rep["confusion"]).sum() == 6
        assert 0.0 <= rep["macro_f1"] <= 1.0
    synthetic = model.modalities != "audio"
    assert m["synthetic_pairs"] is synthetic
    assert ("synthetic pairs" in m["note"]) is synthetic
    if "av" in conds:
        assert "synthetic pairs" in m["conditions"]["av"]["data"]
    curves = m["masking"]["curves"]
    kinds = {"av": {"audio", "video", "both"}}.get(model.modalities, {model.modalities})
    assert set(curves) == kinds
    for pts in curves.values():
        assert [p["kept"] for p in pts] == pytest.approx([0.1 * k for k in range(1, 10)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"].startswith("python -m train.train --model " + name)
    assert summary["synthetic_pairs"] is synthetic and set(summary["test"]) == conds


def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    from train.train import main

    require_data()
    args = ["--model", "auxformer", *SMOKE]  # 6 Train clips, batch 4: two steps per epoch
    a, b = tmp_path / "interrupted", tmp_path / "straight"
    assert main([*args, "--out", str(a)]) == 0  # stops after step 1, inside epoch 1
    with pytest.raises(SystemExit):  # an existing run is never silently overwritten
        main([*args, "--out", str(a)])
    assert main([*args, "--out", str(a), "--max-steps", "2", "--resume"]) == 0
    assert main([*args, "--out", str(b), "--max-steps", "2"]) == 0

    recs = records(a)
    resume = next(r for r in recs if r["event"] == "resume")
    assert (resume["step"], resume["epoch"], resume["pos"]) == (1, 0, 1)
    after = [r for r in recs[recs.index(resume) :] if r["event"] == "epoch"]
    assert [(r["epoch"], r["step"]) for r in after] == [(1, 2)]
    for f in ("last.pt", "best.pt"):
        sa = torch.load(a / f, weights_only=True)["model"]
        sb = torch.load(b / f, weights_only=True)["model"]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (f, k)
    first = torch.load(a / "best_main.pt", weights_only=True)
    assert first["epoch"] == 1 and not first["partial"]


def test_ddp_two_ranks_on_gloo(tmp_path: Path) -> None:
    require_data()
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "train.train", "--model", "mult", "--out", str(out), "--device", "cpu", *SMOKE,
        "--batch", "6",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-4000:]
    recs = records(out)
    assert [r["event"] for r in recs].count("config") == 1  # only rank 0 logs
    assert recs[0]["world"] == 2 and recs[0]["command"].startswith("torchrun --nproc-per-node 2")
    ddp = next(r for r in recs if r["event"] == "ddp")
    r0, r1 = ddp["indices"]
    assert len(r0) == len(r1) == 3 and not set(r0) & set(r1)  # a DistributedSampler shard each
    assert sorted(r0 + r1) == list(range(6))
    s0, s1 = ddp["param_sums"]
    assert s0 == s1  # gradients averaged over the ranks: identical weights after the step
    assert (out / "last.pt").is_file() and (out / "test_metrics.json").is_file()
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["step"] == 1 and len(state["rng"]) == 2  # each rank's RNG state, for --resume


def test_evaluate_only_reproduces_the_test_metrics(smoke_run, tmp_path: Path) -> None:
    from train.train import main

    out = tmp_path / "run"
    shutil.copytree(smoke_run("auxformer"), out)
    before = json.loads((out / "test_metrics.json").read_text())
    (out / "test_metrics.json").unlink()
    assert main(["--evaluate-only", "--out", str(out), "--threads", "1", "--no-progress"]) == 0
    after = json.loads((out / "test_metrics.json").read_text())
    assert after["conditions"] == before["conditions"]
    assert after["masking"] == before["masking"]
    assert after["command"].startswith("python -m train.train --evaluate-only")
    assert records(out)[-2]["event"] == "evaluate_only"


def test_sweep_aggregates_partitions(smoke_run, tmp_path: Path, capsys) -> None:
    from train import sweep

    src = smoke_run("auxformer")
    runs = tmp_path / "runs"
    for p, f1 in ((1, 0.5), (2, 0.7)):
        out = runs / f"auxformer_p{p}"
        shutil.copytree(src, out)
        m = json.loads((out / "test_metrics.json").read_text())
        m["partition"] = p
        m["conditions"]["av"]["macro_f1"] = f1
        m["masking"]["curves"]["video"][0]["macro_f1"] = f1 / 2
        (out / "test_metrics.json").write_text(json.dumps(m))
    res_json = tmp_path / "res.json"
    # the auxformer runs are finished (skipped); unimodal_video is trained by the sweep
    argv = ["--models", "auxformer,unimodal_video", "--partitions", "1,2", "--runs", str(runs)]
    assert sweep.main([*argv, "--out-json", str(res_json), "--", *SMOKE]) == 0
    assert capsys.readouterr().out.count("skip ") == 2
    uv = json.loads(res_json.read_text())["models"]["unimodal_video"]
    f1s = [
        json.loads((runs / f"unimodal_video_p{p}" / "test_metrics.json").read_text())["conditions"][
            "video_only"
        ]["micro_f1"]
        for p in (1, 2)
    ]
    assert uv["conditions"]["video_only"]["micro_f1"]["values"] == f1s
    assert set(uv["conditions"]) == {"video_only"} and set(uv["masking"]) == {"video"}
    res = json.loads(res_json.read_text())["models"]["auxformer"]
    av = res["conditions"]["av"]["macro_f1"]
    assert av["mean"] == pytest.approx(0.6)
    assert av["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert res["partitions"] == [1, 2] and res["synthetic_pairs"] is True
    v0 = res["masking"]["video"][0]
    assert v0["masked"] == pytest.approx(0.9) and v0["macro_f1"]["mean"] == pytest.approx(0.3)
    md = res_json.with_suffix(".md").read_text()
    assert "| auxformer | 1,2 | 0.600 ± 0.141 |" in md and "SYNTHETIC PAIRS" in md
    import cv2

    png = cv2.imread(str(res_json.with_suffix(".png")))
    assert png is not None and png.shape[0] > 3 * 300  # three panels: audio, video, both
    assert sweep.main([*argv, "--out-json", str(res_json)]) == 0  # all finished: nothing to run
    assert capsys.readouterr().out.count("skip ") == 4


def test_unpaired_batches_hold_one_modality(tmp_path: Path) -> None:
    from train.train import main

    require_data()
    out = tmp_path / "unpaired"
    args = ["--model", "auxformer_deploy", "--out", str(out), *SMOKE, "--pairing", "unpaired"]
    assert main([*args, "--batch", "2", "--max-steps", "3", "--no-optimised-training"]) == 0
    recs = records(out)
    assert next(r for r in recs if r["event"] == "data")["pairing"] == "unpaired"
    modes = next(r for r in recs if r["event"] == "epoch")["batch_modalities"]
    assert set(modes) <= {"audio", "video"} and sum(modes.values()) == 3, modes
    m = json.loads((out / "test_metrics.json").read_text())
    assert set(m["conditions"]) == {"av", "audio_only", "video_only"}  # evaluation stays paired
