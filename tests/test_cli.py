"""The CLI end to end on a tiny slice of the embedded data: all outputs exist and --resume continues."""

import json
import os

import numpy as np
import pytest

from experiments.run import build_parser, main

DATA = os.path.join(os.path.dirname(__file__), "..", "experiments", "data")


@pytest.fixture
def tiny_config(tmp_path):
    for split, n in (("train", 12), ("test", 6)):
        f = np.load(os.path.join(DATA, f"rmd17_aspirin_{split}_01.npz"))
        np.savez(tmp_path / f"{split}.npz", **{k: f[k][:n] if k != "nuclear_charges" else f[k]
                                                for k in ("nuclear_charges", "coords", "energies", "forces")})
    (tmp_path / "tiny.yaml").write_text(
        "dataset: {train: train.npz, test: test.npz, n_train: 8, n_val: 4}\n"
        "model: {r_max: 4.0, l_max: 1, num_layers: 1, num_tensor_features: 4, two_body_mlp: [8, 16],\n"
        "        latent_mlp: [16], readout_mlp: [8]}\n"
        "training: {batch_size: 4, eval_batch_size: 6, max_minutes: null}\n")
    return str(tmp_path / "tiny.yaml")


def test_train_command_writes_results(tmp_path, tiny_config, capsys):
    out = str(tmp_path / "run")
    assert main(["--dataset", "rmd17-aspirin", "--config", tiny_config, "--max-epochs", "1", "--out", out]) == 0
    for name in ("results.json", "metrics.csv", "parity.png", "learning_curve.png", "config.json"):
        assert os.path.exists(os.path.join(out, name)), name
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["n_test"] == 6 and results["epochs"] == 1
    assert np.isfinite(results["test"]["forces_mae"]) and results["compiled_shapes"] >= 1
    assert "forces MAE" in capsys.readouterr().out
    # resume to two epochs: continues, does not restart
    assert main(["train", "--config", tiny_config, "--max-epochs", "2", "--out", out, "--resume"]) == 0
    assert json.load(open(os.path.join(out, "results.json")))["epochs"] == 2


def test_help_lists_options(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    for option in ("--dataset", "--model", "--config", "--profile", "--max-epochs", "--max-minutes", "--out",
                   "--seed", "--resume"):
        assert option in text


def test_unknown_profile_is_a_clear_error(tiny_config):
    with pytest.raises(SystemExit):
        main(["--profile", "gpu"])
