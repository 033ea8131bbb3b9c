"""train/train_audio.py on real CREMA-D clips: two seeds of a smoke-sized run on one partition,
their ensemble (the mean of the members' softmax), the sweep-format aggregate, and resuming."""

from __future__ import annotations

import json

import numpy as np

from emosdk.metrics import classification_report
from train import LABELS
from train.data import DATA_ROOT as DATA
from train.train_audio import main, softmax

ARGS = ["--partitions", "2", "--seeds", "0,1", "--limit", "16", "--max-steps", "2",
        "--epochs", "1", "--threads", "1", "--cache-dir", ""]  # fmt: skip


def test_train_audio_two_seeds_and_their_ensemble(tmp_path, capsys):
    assert (DATA / "cremad").is_dir(), f"CREMA-D missing in {DATA}"
    runs, out = tmp_path / "runs", tmp_path / "agg.json"
    res = main(["--runs", str(runs), "--out-json", str(out), *ARGS])
    assert json.loads(out.read_text())["models"] == res["models"]
    assert set(res["models"]) == {"emosdk_audio_s0", "emosdk_audio_s1", "emosdk_audio_ens2"}
    members = []
    for seed in (0, 1):
        run = runs / f"emosdk_audio_s{seed}_p2"
        assert (run / "audio.pt").is_file() and (run / "test_metrics.json").is_file()
        z = np.load(run / "logits.npz")
        assert z["Test_logits"].shape == (16, len(LABELS)) and len(z["Development_y"]) == 16
        members.append(z)
    # the two seeds train different models
    assert not np.allclose(members[0]["Test_logits"], members[1]["Test_logits"])
    ens = json.loads((runs / "emosdk_audio_ens2_p2" / "test_metrics.json").read_text())
    probs = (softmax(members[0]["Test_logits"]) + softmax(members[1]["Test_logits"])) / 2
    y = members[0]["Test_y"]
    expect = classification_report(y, probs.argmax(-1), LABELS)
    assert ens["conditions"]["audio_only"]["confusion"] == expect["confusion"]
    assert not ens["synthetic_pairs"] and ens["seeds"] == [0, 1]
    agg = res["models"]["emosdk_audio_ens2"]["conditions"]["audio_only"]
    assert agg["macro_f1"]["values"] == [expect["macro_f1"]]
    # a second call finds the finished runs and does not train them again
    capsys.readouterr()
    again = main(["--runs", str(runs), *ARGS])
    assert capsys.readouterr().out.count("finished") == 2
    assert again["models"] == res["models"]
