"""train/train_audio.py on real CREMA-D clips: two seeds of a smoke-sized run on one partition,
their ensemble (the mean of the members' softmax), the sweep-format aggregate, and resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emosdk.metrics import classification_report
from emosdk.scores import softmax
from train import LABELS
from train.data import DATA_ROOT as DATA
from train.train_audio import main

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
        assert (
            z["Test_logits_audio_only"].shape == (16, len(LABELS)) and len(z["Development_y"]) == 16
        )
        members.append(z)
    # the two seeds train different models
    z0, z1 = (m["Test_logits_audio_only"] for m in members)
    assert not np.allclose(z0, z1)
    ens = json.loads((runs / "emosdk_audio_ens2_p2" / "test_metrics.json").read_text())
    probs = (softmax(z0) + softmax(z1)) / 2
    y = members[0]["Test_y"]
    expect = classification_report(y, probs.argmax(-1), LABELS)
    assert ens["conditions"]["audio_only"]["confusion"] == expect["confusion"]
    assert not ens["synthetic_pairs"]
    assert ens["members"] == [str(runs / f"emosdk_audio_s{s}_p2") for s in (0, 1)]
    agg = res["models"]["emosdk_audio_ens2"]["conditions"]["audio_only"]
    assert agg["macro_f1"]["values"] == [expect["macro_f1"]]
    # a second call finds the finished runs and does not train them again
    capsys.readouterr()
    again = main(["--runs", str(runs), *ARGS])
    assert capsys.readouterr().out.count("finished") == 2
    assert again["models"] == res["models"]


def test_ensemble_of_a_driver_run_and_an_audio_encoder_run(tmp_path, capsys):
    """train.ensemble mixes models: a train.train unimodal_audio run and a train_audio run on the
    same Test clips; the report is the argmax of their mean softmax."""
    from train import ensemble, report
    from train.train import main as driver

    assert (DATA / "cremad").is_dir(), f"CREMA-D missing in {DATA}"
    runs = tmp_path / "runs"
    main(["--runs", str(runs), *ARGS[:2], "--seeds", "0", *ARGS[4:]])
    drv = ["--model", "unimodal_audio", "--partition", "2", "--size", "smoke", "--limit", "16",
           "--max-steps", "1", "--batch", "4", "--cache-dir", "", "--threads", "1",
           "--no-progress", "--data-root", str(DATA)]  # fmt: skip
    assert driver([*drv, "--out", str(runs / "uni_p2")]) == 0
    members = f"{runs}/emosdk_audio_s0,{runs}/uni"
    res = ensemble.main(
        ["--members", members, "--name", "mix", "--out-runs", str(runs), "--partitions", "2,3",
         "--out-json", str(tmp_path / "mix.json")]
    )  # fmt: skip
    assert res["models"]["mix"]["partitions"] == [2]  # partition 3 has no runs: left out
    z = [np.load(runs / f"{m}_p2" / "logits.npz") for m in ("emosdk_audio_s0", "uni")]
    assert all(np.array_equal(z[0]["Test_names"], zz["Test_names"]) for zz in z)
    probs = np.mean([softmax(zz["Test_logits_audio_only"]) for zz in z], 0)
    mix = json.loads((runs / "mix_p2" / "test_metrics.json").read_text())
    expect = classification_report(z[0]["Test_y"], probs.argmax(-1), LABELS)
    assert mix["conditions"]["audio_only"]["confusion"] == expect["confusion"]
    dev = np.mean([softmax(zz["Development_logits_audio_only"]) for zz in z], 0)
    dev_expect = classification_report(z[0]["Development_y"], dev.argmax(-1), LABELS)
    assert mix["dev"]["macro_f1"] == dev_expect["macro_f1"]
    assert res["models"]["mix"]["development"]["macro_f1"] == dev_expect["macro_f1"]
    # the report merges the single runs and the ensemble into one audio table
    single = tmp_path / "single.json"
    main(["--runs", str(runs), *ARGS[:2], "--seeds", "0", *ARGS[4:], "--out-json", str(single)])
    capsys.readouterr()
    assert report.main([str(single), str(tmp_path / "mix.json")]) == 0
    table = capsys.readouterr().out.split("### Synthetic pairs")[0]
    assert "seed 0 (`train_audio`) | 2 |" in table and "| mix | 2 |" in table
    # a member over other clips is refused
    np.savez(
        runs / "uni_p2" / "logits.npz",
        **{k: z[1][k] for k in z[1].files} | {"Test_names": z[1]["Test_names"][::-1]},
    )
    with pytest.raises(ValueError, match="other Test clips"):
        ensemble.main(["--members", members, "--name", "mix", "--out-runs", str(runs)])
