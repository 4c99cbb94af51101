"""The CLI end to end on a tiny slice of the embedded data: all outputs exist and --resume continues."""

import json
import os

import numpy as np
import pytest

from experiments.run import build_parser, main


def test_train_command_writes_results(tmp_path, tiny_config, capsys, jax_compilation_cache):
    # jax_compilation_cache: the resumed run loads the programs the first run compiled
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
