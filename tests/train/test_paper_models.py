"""The papers' models (train/models/) under the one forward contract, at size="smoke"."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from train.models import (  # noqa: E402
    HUSSAIN_D_AUDIO,
    MODELS,
    VAVL,
    build_model,
    count_params,
    hussain_audio_frames,
    optimised_training_mask,
)
from train.models.layers import attention_bias, rel_shift  # noqa: E402
from train.models.vavl import ccc  # noqa: E402

NAMES = [
    "auxformer",
    "auxformer_deploy",
    "vavl",
    "mult",
    "parthasarathy",
    "unimodal_audio",
    "unimodal_video",
    "hussain",
]
D_VIDEO, N_CLASSES = 10, 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is 2-3x faster than two on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def d_audio(name: str) -> int:
    return HUSSAIN_D_AUDIO if name == "hussain" else 12


def make_batch(name: str, B: int = 3, ta: int = 40, tv: int = 9, seed: int = 0) -> dict:
    """Random batch; sample i has its own valid lengths (the rest is padding with mask 0)."""
    g = torch.Generator().manual_seed(seed)
    da = d_audio(name)
    am, vm = torch.zeros(B, ta), torch.zeros(B, tv)
    for i in range(B):
        am[i, : ta - 7 * i] = 1.0
        vm[i, : tv - 2 * i] = 1.0
    labels = torch.arange(B) % N_CLASSES
    soft = torch.rand(B, N_CLASSES, generator=g)
    return {
        "audio": torch.randn(B, ta, da, generator=g),
        "audio_mask": am,
        "video": torch.randn(B, tv, D_VIDEO, generator=g),
        "video_mask": vm,
        "label": labels,
        "soft": soft / soft.sum(dim=1, keepdim=True),
        "valence": torch.randn(B, generator=g),
        "arousal": torch.randn(B, generator=g),
    }


def smoke(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_model(name, d_audio(name), D_VIDEO, N_CLASSES, size="smoke", **kw)


def run(model, batch: dict) -> dict:
    return model(batch["audio"], batch["audio_mask"], batch["video"], batch["video_mask"])


# ------------------------------------------------------------------------------------------
def test_registry_and_build_errors() -> None:
    assert sorted(MODELS) == sorted(NAMES)
    with pytest.raises(KeyError):
        build_model("nope", 8, 8, 4)
    with pytest.raises(ValueError):
        build_model("mult", 8, 8, 4, size="huge")
    with pytest.raises(ValueError, match="d_audio"):
        build_model("hussain", 64, 8, 4, size="smoke")
    with pytest.raises(TypeError):
        build_model("mult", 8, 8, 4, size="smoke", not_an_argument=1)
    m = smoke("mult")
    with pytest.raises(ValueError):
        m.set_stage("fusion")
    assert m.stages == ["main"]
    assert smoke("vavl").stages == ["unimodal", "fusion"]
    assert {n: MODELS[n].modalities for n in NAMES} == {
        n: ("audio" if n == "unimodal_audio" else "video" if n == "unimodal_video" else "av")
        for n in NAMES
    }
    assert smoke("unimodal_video").modalities == "video"


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_missing_modalities(name: str) -> None:
    model = smoke(name).eval()
    batch = make_batch(name)
    with torch.no_grad():
        out = run(model, batch)
        assert out["logits"].shape == (3, N_CLASSES)
        for key, t in out.items():
            assert key == "logits" or key.startswith(
                ("logits_", "recon_", "target_", "present_", "va")
            )
            assert torch.isfinite(t).all(), key
        for drop in ("audio", "video"):
            b = dict(batch)
            b[f"{drop}_mask"] = torch.zeros_like(batch[f"{drop}_mask"])
            b[drop] = torch.randn_like(batch[drop]) * 50  # garbage behind an all-zero mask
            for t in run(model, b).values():
                assert torch.isfinite(t).all(), drop
        b = dict(batch, audio_mask=torch.zeros(3, 40), video_mask=torch.zeros(3, 9))
        assert torch.isfinite(run(model, b)["logits"]).all()
    model.train()
    loss = model.compute_loss(run(model, batch), batch)
    assert loss.dim() == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("name", NAMES)
def test_padding_invariance(name: str) -> None:
    """Appending masked frames with garbage values changes no logit (beyond 1e-5)."""
    model = smoke(name).eval()
    batch = make_batch(name)
    g = torch.Generator().manual_seed(1)
    pad_a, pad_v = 37, 5  # 37 crosses hussain's 32-frame pooling blocks
    b = dict(batch)
    b["audio"] = torch.cat(
        [batch["audio"], 100 * torch.randn(3, pad_a, d_audio(name), generator=g)], 1
    )
    b["audio_mask"] = torch.cat([batch["audio_mask"], torch.zeros(3, pad_a)], 1)
    b["video"] = torch.cat([batch["video"], 100 * torch.randn(3, pad_v, D_VIDEO, generator=g)], 1)
    b["video_mask"] = torch.cat([batch["video_mask"], torch.zeros(3, pad_v)], 1)
    # garbage also inside the original padding of samples 1 and 2
    b["audio"] = torch.where(b["audio_mask"][..., None] > 0, b["audio"], 100.0)
    for missing in (None, "audio", "video"):
        ref_b, pad_b = dict(batch), dict(b)
        if missing:
            ref_b[f"{missing}_mask"] = torch.zeros_like(batch[f"{missing}_mask"])
            pad_b[f"{missing}_mask"] = torch.zeros_like(b[f"{missing}_mask"])
        with torch.no_grad():
            ref, got = run(model, ref_b)["logits"], run(model, pad_b)["logits"]
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0, msg=f"{name} missing={missing}")


def _fit(model, batch: dict, steps: int = 20, lr: float = 3e-3) -> tuple[float, float]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    model.eval()
    with torch.no_grad():
        before = float(model.compute_loss(run(model, batch), batch))
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = model.compute_loss(run(model, batch), batch)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = float(model.compute_loss(run(model, batch), batch))
    return before, after


@pytest.mark.parametrize("name", NAMES)
def test_overfits_a_batch_of_eight(name: str) -> None:
    model = smoke(name)
    batch = make_batch(name, B=8, ta=24, tv=6)
    for stage in model.stages:
        model.set_stage(stage)
        before, after = _fit(model, batch)
        assert after < before, (name, stage, before, after)


def test_vavl_fusion_stage_trains_only_the_fusion_head() -> None:
    model = smoke("vavl")
    batch = make_batch("vavl", B=4)
    model.set_stage("fusion")
    model.train()
    assert not model.acoustic.training and not model.shared.training and model.fusion.training
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fusion.")}
    head = {k: v.clone() for k, v in model.fusion.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt.zero_grad()
    model.compute_loss(run(model, batch), batch).backward()
    opt.step()
    for k, v in model.state_dict().items():
        if k in frozen:  # parameters and BatchNorm running statistics
            assert torch.equal(v, frozen[k]), k
    assert any(not torch.equal(v, head[k]) for k, v in model.fusion.state_dict().items())
    model.set_stage("unimodal")
    assert model.acoustic.training and all(p.requires_grad for p in model.acoustic.parameters())
    assert not any(p.requires_grad for p in model.fusion.parameters())


def test_vavl_unpaired_batch() -> None:
    """Samples 0, 1 audio only, 2, 3 video only: each trains its own branch, nothing leaks."""
    model = smoke("vavl")
    batch = make_batch("vavl", B=4)
    batch["video_mask"][:2] = 0
    batch["audio_mask"][2:] = 0
    model.eval()
    out = run(model, batch)
    torch.testing.assert_close(out["logits"][:2], out["logits_audio"][:2])
    torch.testing.assert_close(out["logits"][2:], out["logits_video"][2:])
    loss = model.compute_loss(out, batch)
    assert torch.isfinite(loss)
    # the masked-out modality of each sample does not matter
    b = dict(batch, video=batch["video"].clone(), audio=batch["audio"].clone())
    b["video"][:2] = 123.0
    b["audio"][2:] = -77.0
    torch.testing.assert_close(model.compute_loss(run(model, b), b), loss)
    model.train()
    model.zero_grad()
    model.compute_loss(run(model, batch), batch).backward()
    assert model.acoustic.input_projection.weight.grad.abs().sum() > 0
    assert model.visual.input_projection.weight.grad.abs().sum() > 0
    # in the fusion stage there is no paired sample: a zero loss that still backpropagates
    model.set_stage("fusion")
    loss = model.compute_loss(run(model, batch), batch)
    assert float(loss.detach()) == 0.0
    loss.backward()


def test_vavl_regression_ccc_loss() -> None:
    model = smoke("vavl", regression=True)
    batch = make_batch("vavl", B=8, ta=24, tv=6)
    with torch.no_grad():
        out = run(model.eval(), batch)
    assert out["va"].shape == (8, 2) and out["logits"].shape == (8, N_CLASSES)
    with_reg = float(model.compute_loss(out, batch))
    no_reg = {k: v for k, v in batch.items() if k not in ("valence", "arousal")}
    assert with_reg > float(model.compute_loss(out, no_reg))  # the 1 - CCC terms are added
    before, after = _fit(model, batch)
    assert after < before


def test_ccc_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(50), rng.standard_normal(50) * 0.5 + 0.3
    y = 0.7 * x + y

    def np_ccc(a: np.ndarray, b: np.ndarray) -> float:
        rho = np.corrcoef(a, b)[0, 1]
        return 2 * rho * a.std() * b.std() / (a.var() + b.var() + (a.mean() - b.mean()) ** 2)

    got = float(ccc(torch.tensor(x), torch.tensor(y)))
    assert got == pytest.approx(np_ccc(x, y), abs=1e-6)
    w = torch.tensor((np.arange(50) % 3 == 0).astype(np.float32))
    sub = w.numpy() > 0
    assert float(ccc(torch.tensor(x), torch.tensor(y), w)) == pytest.approx(
        np_ccc(x[sub], y[sub]), abs=1e-6
    )
    assert float(ccc(torch.tensor(x), torch.tensor(x))) == pytest.approx(1.0, abs=1e-6)
    assert float(ccc(torch.ones(3), torch.ones(3), torch.tensor([1.0, 0, 0]))) == 0.0


def test_rel_shift_is_relative_position() -> None:
    B, H, T = 2, 3, 5
    x = torch.randn(B, H, T, 2 * T - 1)  # column k <-> relative position (T - 1) - k
    got = rel_shift(x)
    i, j = torch.meshgrid(torch.arange(T), torch.arange(T), indexing="ij")
    torch.testing.assert_close(got, x[:, :, i, (T - 1) - (i - j)])


def test_causal_bias_matches_fairseq_future_mask() -> None:
    """Unpadded: fairseq's triu(-inf, 1 + |S_kv - S_q|); padded: the same on the valid part."""
    for tq, tk in ((5, 5), (4, 7), (7, 3)):
        ref = torch.triu(torch.ones(tq, tk), 1 + abs(tk - tq)) * -1e4  # fairseq, -inf -> -1e4
        got = attention_bias(torch.ones(1, tq), torch.ones(1, tk), causal=True)[0, 0]
        torch.testing.assert_close(got, ref)
        q_mask = torch.cat([torch.ones(1, tq), torch.zeros(1, 3)], dim=1)
        k_mask = torch.cat([torch.ones(1, tk), torch.zeros(1, 2)], dim=1)
        padded = attention_bias(q_mask, k_mask, causal=True)[0, 0]
        torch.testing.assert_close(padded[:tq, :tk], ref)
        assert (padded[:tq, tk:] <= -1e4).all()


def test_hussain_audio_frames() -> None:
    logmel, wave = torch.randn(2, 5, 64), torch.randn(2, 5 * 160 - 30)
    frames = hussain_audio_frames(logmel, wave)
    assert frames.shape == (2, 5, HUSSAIN_D_AUDIO)
    torch.testing.assert_close(frames[..., :64], logmel)
    torch.testing.assert_close(frames[..., 64:].reshape(2, -1)[:, : wave.shape[1]], wave)
    assert float(frames[:, -1, -30:].abs().sum()) == 0.0


def test_auxformer_logits_are_the_mean_of_three_heads_and_loss_thirds() -> None:
    model = smoke("auxformer").eval()
    batch = make_batch("auxformer")
    out = run(model, batch)
    torch.testing.assert_close(
        out["logits"], (out["logits_av"] + out["logits_audio"] + out["logits_video"]) / 3
    )
    ce = torch.nn.functional.cross_entropy
    y = batch["label"]
    want = sum(ce(out[k], y) for k in ("logits_av", "logits_audio", "logits_video")) / 3
    torch.testing.assert_close(model.compute_loss(out, batch), want)
    soft = smoke("auxformer", soft_labels=True).eval()
    assert torch.isfinite(soft.compute_loss(run(soft, batch), batch))


def test_optimised_training_mask() -> None:
    batch = make_batch("auxformer", B=4)
    g = torch.Generator().manual_seed(0)
    counts = {"audio": 0, "video": 0, "none": 0}
    for _ in range(400):
        b = optimised_training_mask(batch, g)
        a_off = b["audio_mask"].sum(dim=1) == 0
        v_off = b["video_mask"].sum(dim=1) == 0
        assert a_off.all() or not a_off.any()  # per batch: the whole batch or nobody
        assert not (a_off & v_off).any()
        key = "audio" if a_off.all() else "video" if v_off.all() else "none"
        counts[key] += 1
        if a_off.all():
            assert float(b["audio"].abs().sum()) == 0.0
    assert 50 < counts["audio"] < 110 and 50 < counts["video"] < 110
    assert batch["audio_mask"].sum() > 0  # input untouched
    big = make_batch("auxformer", B=4000, ta=2, tv=2)
    big["audio_mask"][:] = 1.0
    big["video_mask"][:] = 1.0
    b = optimised_training_mask(big, g, per_sample=True)
    a_frac = float((b["audio_mask"].sum(1) == 0).float().mean())
    v_frac = float((b["video_mask"].sum(1) == 0).float().mean())
    assert abs(a_frac - 0.2) < 0.03 and abs(v_frac - 0.2) < 0.03


PAPER_DIMS = {"hussain": (HUSSAIN_D_AUDIO, 2048)}
PAPER_RANGES = {  # d_audio 1024 (wav2vec2-large), d_video 1408 (EfficientNet-B2), 6 classes
    "auxformer": (6.0e6, 7.5e6),  # journal Table 5: 7.05 M (its 4096-d VGG-Face input)
    "auxformer_deploy": (0.4e6, 0.8e6),  # shipped fusion graph: 0.51 M at 128/128 inputs
    "vavl": (45e6, 60e6),  # 8 conformer blocks of 512 (~6.3 M each) + heads
    "mult": (0.25e6, 0.4e6),  # journal Table 5: 358,384 (baseline 2)
    "parthasarathy": (35e6, 50e6),  # 14 layers of 512 / 2048 (~3.15 M each) + projections
    "unimodal_audio": (28e6, 35e6),  # 5 conformer blocks of 512
    "unimodal_video": (28e6, 35e6),
    "hussain": (78e6, 88e6),  # PANNs Wavegram-Logmel-CNN14 (~81 M) + heads
}


def test_paper_parameter_counts() -> None:
    """Built on the meta device (no memory). Exact Table 5 counts where the journal has them."""
    with torch.device("meta"):
        exact = {
            "auxformer": build_model("auxformer", 130, 4096, 4),
            "auxformer aux=False (baseline 1)": build_model("auxformer", 130, 4096, 4, aux=False),
            "mult": build_model("mult", 130, 4096, 4),
        }
        counts = {k: count_params(m, trainable_only=False) for k, m in exact.items()}
        assert counts == {
            "auxformer": 7_054_748,
            "auxformer aux=False (baseline 1)": 4_776_994,
            "mult": 358_384,
        }
        for name in NAMES:
            da, dv = PAPER_DIMS.get(name, (1024, 1408))
            n = count_params(build_model(name, da, dv, 6), trainable_only=False)
            print(f"{name} (paper, {da}/{dv}/6): {n:,} parameters")
            lo, hi = PAPER_RANGES[name]
            assert lo <= n <= hi, (name, n)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("name", ["auxformer", "vavl"])
def test_onnx_export_matches_torch(name: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = smoke(name).eval()

    class Logits(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, a, am, v, vm):
            out = self.m(a, am, v, vm)
            return out["logits"], out["logits_av"]

    wrapper = Logits(model).eval()
    batch = make_batch(name, B=3, ta=20, tv=7)
    args = tuple(batch[k] for k in ("audio", "audio_mask", "video", "video_mask"))
    B, Ta, Tv = (torch.export.Dim(n, min=1, max=4096) for n in ("B", "Ta", "Tv"))
    shapes = ({0: B, 1: Ta}, {0: B, 1: Ta}, {0: B, 1: Tv}, {0: B, 1: Tv})
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        wrapper,
        args,
        str(path),
        dynamo=True,
        dynamic_shapes=shapes,
        input_names=["audio", "audio_mask", "video", "video_mask"],
        output_names=["logits", "logits_av"],
        opset_version=18,
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cases = [batch, make_batch(name, B=2, ta=33, tv=4, seed=3)]
    missing = make_batch(name, B=3, ta=20, tv=7, seed=4)
    missing["video_mask"][:] = 0
    cases.append(missing)
    for b in cases:
        feeds = {k: b[k].numpy() for k in ("audio", "audio_mask", "video", "video_mask")}
        got = sess.run(None, feeds)
        with torch.no_grad():
            want = wrapper(*(b[k] for k in ("audio", "audio_mask", "video", "video_mask")))
        for g_, w_ in zip(got, want):
            assert np.abs(g_ - w_.numpy()).max() < 1e-4


def test_vavl_class_is_exported() -> None:
    assert isinstance(smoke("vavl"), VAVL)
