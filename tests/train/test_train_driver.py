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

from emosdk.metrics import classification_report
from train import LABELS
from train.data import DATA_ROOT as DATA  # ../shared/data beside the checkout, or $EMOSDK_DATA
from train.models import MODELS, build_model

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
    with np.load(out / "logits.npz") as z:  # per-clip logits for train.ensemble
        assert len(z["Test_names"]) == len(z["Test_y"]) == 6
        for c, rep in m["conditions"].items():
            assert METRIC_KEYS <= set(rep), c
            assert rep["n"] == 6 and np.array(rep["confusion"]).sum() == 6
            assert 0.0 <= rep["macro_f1"] <= 1.0
            assert z[f"Test_logits_{c}"].shape == (6, 6)
            pred = z[f"Test_logits_{c}"].argmax(-1)
            assert classification_report(z["Test_y"], pred, LABELS)["confusion"] == rep["confusion"]
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
    assert ddp["ddp"] == "DistributedDataParallel" and ddp["find_unused_parameters"] is True
    r0, r1 = ddp["indices"]
    assert len(r0) == len(r1) == 3 and not set(r0) & set(r1)  # a DistributedSampler shard each
    assert sorted(r0 + r1) == list(range(6))
    s0, s1 = ddp["param_sums"]
    assert s0 == s1  # gradients averaged over the ranks: identical weights after the step
    assert (out / "last.pt").is_file() and (out / "test_metrics.json").is_file()
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["step"] == 1 and len(state["rng"]) == 2  # each rank's RNG state, for --resume


DDP_WORKER = r'''
"""torchrun worker of test_ddp_step_equals_a_one_process_step: train.train's step (wrap_ddp +
train_step) on each rank's shard of a global batch, vs the same step in one process on the whole
batch and vs a rank's shard alone (no averaging); both references run on every rank, without
collectives. Writes OUT/rank<r>.json and the weights OUT/rank<r>_<model>.pt."""

import copy
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from train.models import build_model
from train.train import Config, broadcast_model, setup_dist, train_step, wrap_ddp

torch.set_num_threads(1)
out = Path(sys.argv[1])
dist = setup_dist(Config(device="cpu"))
B = 6  # global batch: 3 samples per rank


def batch(seed: int, video_on_odd_rows: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    am = (torch.arange(20)[None] < torch.randint(4, 21, (B, 1), generator=g)).float()
    vm = (torch.arange(15)[None] < torch.randint(3, 16, (B, 1), generator=g)).float()
    if not video_on_odd_rows:
        vm[1::2] = 0.0  # rank 1's shard has no video
    y = torch.randint(0, 6, (B,), generator=g)
    return {
        "audio": torch.randn(B, 20, 64, generator=g) * am[..., None],
        "audio_mask": am,
        "video": torch.randn(B, 15, 128, generator=g) * vm[..., None],
        "video_mask": vm,
        "label": y,
        "soft": F.one_hot(y, 6).float(),
    }


def shard(b: dict) -> dict:  # a DistributedSampler shard: rows rank, rank + world, ...
    return {k: v[dist.rank :: dist.world] for k, v in b.items()}


def steps(net, model, seeds, cut, clip=0.8):
    params = [p for p in model.parameters() if p.requires_grad]
    # eps 1e-6, not 1e-8: the attention key biases have an exactly zero gradient (softmax is
    # blind to a shift common to all keys), so theirs is rounding noise (~1e-10) whose sign
    # depends on the summation order, and Adam with eps 1e-8 turns it into steps of ~lr / 20
    opt = torch.optim.Adam(params, lr=1e-3, eps=1e-6)
    for s in seeds:
        train_step(net, cut(batch(s)), opt, params, clip)
    return opt


def diff(a: torch.nn.Module, b: torch.nn.Module) -> dict:
    sa, sb = a.state_dict(), b.state_dict()
    ga = {n: p.grad for n, p in a.named_parameters() if p.requires_grad}
    gb = {n: p.grad for n, p in b.named_parameters() if p.requires_grad}
    both = [k for k in ga if ga[k] is not None and gb[k] is not None]
    return {
        "weights": max(float((sa[k] - sb[k]).abs().max()) for k in sa),
        "grads": max(float((ga[k] - gb[k]).abs().max()) for k in both),
        "grad_none": sorted(k for k in ga if ga[k] is None or gb[k] is None),
    }


def compare(model, seeds) -> dict:
    """DDP over the ranks vs one process on the whole batch vs one rank's shard alone."""
    one, alone = copy.deepcopy(model), copy.deepcopy(model)
    net = wrap_ddp(model, dist)
    assert type(net).__name__ == "DistributedDataParallel"
    steps(net, model, seeds, shard)
    steps(one, one, seeds, lambda b: b)
    steps(alone, alone, seeds, shard)
    return {"vs_one_process": diff(model, one), "unsynced_vs_one_process": diff(alone, one)}


res = {}
torch.manual_seed(0)
zero_drop = dict(attn_dropout=0.0, relu_dropout=0.0, res_dropout=0.0, embed_dropout=0.0)
mult = build_model("mult", 64, 128, 6, "smoke", **zero_drop)  # no batch norm, no dropout
res["mult"] = compare(mult, [1, 2])
torch.save(mult.state_dict(), out / f"rank{dist.rank}_mult.pt")

# VAVL as train.train runs it: "unimodal" (batch norm in training: per-rank statistics, so no
# one-process reference), the stage's weights to every rank, then "fusion" re-wrapped (the
# conformers frozen and in eval mode: equal to one process)
vavl = build_model("vavl", 64, 128, 6, "smoke", dropout=0.0, out_dropout=0.0)
steps(wrap_ddp(vavl, dist), vavl, [3], shard)
broadcast_model(vavl, dist)
vavl.set_stage("fusion")
res["vavl_fusion"] = compare(vavl, [4, 5])
torch.save(vavl.state_dict(), out / f"rank{dist.rank}_vavl.pt")


class Branchy(torch.nn.Module):
    """A branch per batch: ``b`` only in a batch with video (rank 0's), ``c`` never."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = (torch.nn.Linear(64, 6) for _ in range(3))

    def forward(self, audio, audio_mask, video, video_mask):
        logits = self.a(audio.mean(1))
        if video_mask.sum() > 0:
            logits = logits + self.b(video[..., :64].mean(1))
        return {"logits": logits}

    def compute_loss(self, out, batch):
        return F.cross_entropy(out["logits"], batch["label"])


torch.manual_seed(0)
toy = Branchy()
# reference (what the former hand-written all-reduce gave): each shard's gradients averaged,
# zeros where a shard leaves a parameter unused, None where every shard does
ref = copy.deepcopy(toy)
full = batch(6, video_on_odd_rows=False)
for r in range(dist.world):
    part = {k: v[r :: dist.world] for k, v in full.items()}
    inputs = (part["audio"], part["audio_mask"], part["video"], part["video_mask"])
    (ref.compute_loss(ref(*inputs), part) / dist.world).backward()
c0 = toy.c.weight.detach().clone()
opt = steps(wrap_ddp(toy, dist), toy, [6], lambda b: shard(batch(6, video_on_odd_rows=False)), 0)
res["branchy"] = {
    "grads_vs_reference": max(
        float((p.grad - q.grad).abs().max())
        for p, q in zip(toy.parameters(), ref.parameters())
        if q.grad is not None
    ),
    "grad_none": sorted(n for n, p in toy.named_parameters() if p.grad is None),
    "b_grad_abs_sum": float(toy.b.weight.grad.abs().sum()),
    "adam_state": sorted(n for n, p in toy.named_parameters() if p in opt.state),
    "c_unchanged": bool(torch.equal(toy.c.weight, c0)),
}
(out / f"rank{dist.rank}.json").write_text(json.dumps(res))
dist.barrier()  # as train.train.main: a rank leaving while gloo still sends to it aborts
torch.distributed.destroy_process_group()
'''


def test_ddp_step_equals_a_one_process_step(tmp_path: Path) -> None:
    """The DDP path of train.train (wrap_ddp + train_step) on 2 ranks x 3 samples gives the
    gradients and weights of one process on the 6 samples.

    Checked on train_step, not on two CLI runs: each rank draws its own crops, face pairs, video
    frames and dropout masks (streams seeded by rank), so a 2-rank run and a 1-process run of the
    CLI never see the same inputs.
    """
    (tmp_path / "worker.py").write_text(DDP_WORKER)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        str(tmp_path / "worker.py"), str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank in res:
        for name in ("mult", "vavl_fusion"):
            same, unsynced = rank[name]["vs_one_process"], rank[name]["unsynced_vs_one_process"]
            assert same["weights"] < 1e-5 and same["grads"] < 1e-5, (name, same)
            assert same["grad_none"] == []  # every trainable parameter has a gradient
            assert min(unsynced["weights"], unsynced["grads"]) > 1e-4, (name, unsynced)
        toy = rank["branchy"]
        assert toy["grads_vs_reference"] < 1e-6, toy
        assert toy["b_grad_abs_sum"] > 0  # used on rank 0 only: averaged with rank 1's zeros
        assert toy["grad_none"] == ["c.bias", "c.weight"]  # unused on every rank: stays None
        assert toy["adam_state"] == ["a.bias", "a.weight", "b.bias", "b.weight"]
        assert toy["c_unchanged"]
    for name in ("mult", "vavl"):
        s0, s1 = (torch.load(tmp_path / f"rank{r}_{name}.pt", weights_only=True) for r in (0, 1))
        assert all(torch.equal(s0[k], s1[k]) for k in s0), name  # the ranks agree exactly


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
    from train import report

    assert report.main([str(res_json)]) == 0
    tables = capsys.readouterr().out
    assert "| `auxformer` | 1,2 | " in tables and "SYNTHETIC PAIRS" in tables
    assert "| unimodal" not in tables  # video-only model: no audio-only row
    paper = "AuxFormer journal, optimised training, acoustic only (Table 2) | 1-5 | 0.602 | 0.592"
    assert paper in tables


@pytest.mark.parametrize("model", ["auxformer_deploy", "vavl"])
def test_unpaired_batches_hold_one_modality(tmp_path: Path, model: str) -> None:
    from train.train import main

    require_data()
    out = tmp_path / "unpaired"
    args = ["--model", model, "--out", str(out), *SMOKE, "--pairing", "unpaired"]
    assert main([*args, "--batch", "2", "--max-steps", "3", "--no-optimised-training"]) == 0
    recs = records(out)
    assert next(r for r in recs if r["event"] == "data")["pairing"] == "unpaired"
    modes = next(r for r in recs if r["event"] == "epoch")["batch_modalities"]
    assert set(modes) <= {"audio", "video"} and sum(modes.values()) == 3, modes
    m = json.loads((out / "test_metrics.json").read_text())
    assert set(m["conditions"]) == {"av", "audio_only", "video_only"}  # evaluation stays paired
