"""The hpo command end to end on a tiny slice of aspirin: trials train and are timed, the report is written,
re-running resumes without new trials, and a study's front transfers to another run."""

import json

import numpy as np

from experiments.run import main


def test_hpo_command_study_resume_and_transfer(tmp_path, tiny_config, capsys, jax_compilation_cache):
    # Only the learning rate varies, so every trial compiles the same programs: with JAX's persistent
    # compilation cache (the fixture) the later trials skip compilation and the test stays short.
    space = tmp_path / "space.yaml"
    space.write_text("training.learning_rate: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    out = tmp_path / "study"
    argv = ["hpo", "--dataset", "rmd17-aspirin", "--config", tiny_config, "--space", str(space),
            "--n-trials", "2", "--n-initial", "2", "--trial-epochs", "1", "--timing-structures", "2",
            "--out", str(out)]
    assert main(argv) == 0
    for name in ("pareto.png", "hypervolume.png", "pareto.md", "study.json", "study.db"):
        assert (out / name).exists(), name
    summary = json.loads((out / "study.json").read_text())
    assert len(summary["trials"]) == 2 and not summary["failed"]
    for t in summary["trials"]:
        forces_mae, ms = t["values"]
        assert np.isfinite(forces_mae) and forces_mae > 0 and ms > 0
        assert t["epochs"] == 1 and t["validation"]["forces_mae"] == forces_mae
        assert t["wall_minutes"] > t["train_minutes"] > 0  # the trial's wall time holds its training
    assert any(t["pareto"] for t in summary["trials"])
    assert np.all(np.diff(summary["hypervolume"]) >= 0)
    assert "Pareto-optimal configurations" in capsys.readouterr().out

    assert main(argv) == 0  # the same command again: the study is complete, nothing new runs
    assert len(json.loads((out / "study.json").read_text())["trials"]) == 2

    transfer = tmp_path / "transfer"
    assert main(["hpo", "--dataset", "rmd17-aspirin", "--config", tiny_config, "--space", str(space),
                 "--trial-epochs", "1", "--timing-structures", "2", "--out", str(transfer),
                 "--transfer-from", str(out / "study.db")]) == 0
    moved = json.loads((transfer / "study.json").read_text())["trials"]
    source = {tuple(sorted(t["params"].items())) for t in summary["trials"] if t["pareto"]}
    assert {tuple(sorted(t["params"].items())) for t in moved} == source
    assert all(t["source_trial"] in [s["number"] for s in summary["trials"]] for t in moved)
    assert "Transferred from" in (transfer / "pareto.md").read_text()
