"""The training evaluation script and emosdk-bench give the same figures for the same model and
files: the torch modules through the runtime's pipeline vs their ONNX export."""

import sys
from pathlib import Path

import numpy as np

from emosdk import Recognizer
from emosdk.evaluation import accuracy, default_clips_manifest

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures"))


def test_torch_checkpoint_and_onnx_bundle_agree_on_the_real_clips(fixture_bundle):
    from make_fixture_bundle import build_modules

    from train.evaluate import torch_backends

    audio, face, fusion = build_modules()  # the exact modules the fixture bundle was exported from
    manifest = default_clips_manifest()
    with Recognizer(model=fixture_bundle, smoothing="none") as rec:
        onnx = accuracy(rec, manifest, "auto", None, robustness=False)
        modules = {"audio": audio, "face": face, "fusion": fusion}
        backends = torch_backends(rec.bundle, modules)
    with Recognizer(model=fixture_bundle, smoothing="none", backends=backends) as rec:
        assert {g.name for g in rec.graphs.values()} == {"torch"}
        torch_out = accuracy(rec, manifest, "auto", None, robustness=False)
    for key in ("n", "accuracy", "macro_f1", "micro_f1", "uar", "confusion"):
        assert torch_out[key] == onnx[key], key
    assert onnx["n"] == 12


def test_torch_backend_matches_onnx_per_window(fixture_bundle, decoded_clips):
    from make_fixture_bundle import build_modules

    from emosdk.models import load_model
    from train.evaluate import torch_backends

    audio, face, fusion = build_modules()
    _, pcm, frames = decoded_clips[0]
    imgs = [f for _, f in frames[::6]]
    modules = {"audio": audio, "face": face, "fusion": fusion}
    backends = torch_backends(load_model(fixture_bundle), modules)
    with (
        Recognizer(model=fixture_bundle) as a,
        Recognizer(model=fixture_bundle, backends=backends) as b,
    ):
        ra = a.predict(audio=pcm, frame=imgs)
        rb = b.predict(audio=pcm, frame=imgs)
    np.testing.assert_allclose(
        list(ra.raw_scores.values()), list(rb.raw_scores.values()), atol=1e-5
    )
