"""Errors at the edge: `python -m experiments.run` reports each known error class in one line on stderr that
names the file or URL at fault, exits with status 2, and shows the traceback only with --debug; an unexpected
exception (a bug) keeps its traceback. Called in-process; no test trains a model."""

import os

import numpy as np
import pytest

from experiments.run import ERROR_STATUS, main, split_debug


def one_error_line(capsys) -> str:
    """The single ``error:`` line on stderr (asserting there is exactly one and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert err.rstrip().splitlines()[-1] == lines[0], err  # the last thing printed
    return lines[0]


def hpo_report(tmp_path, storage):
    # --report-only opens the study storage and trains nothing
    return ["hpo", "--dataset", "rmd17-benzene", "--out", str(tmp_path / "hpo"), "--storage", storage,
            "--report-only"]


def test_unknown_storage_url_is_one_line_naming_it(tmp_path, capsys):
    assert main(hpo_report(tmp_path, "foo://bar/study")) == ERROR_STATUS
    line = one_error_line(capsys)
    assert "foo://bar/study" in line and "unknown storage URL" in line


def test_corrupt_study_database_is_one_line_naming_the_file(tmp_path, capsys):
    db = tmp_path / "study.db"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(3000))  # a damaged header and pages
    assert main(hpo_report(tmp_path, str(db))) == ERROR_STATUS
    line = one_error_line(capsys)
    assert str(db) in line and "study database" in line


def test_debug_shows_the_traceback_before_or_after_the_command(tmp_path, capsys):
    from qallegro.errors import StorageError

    for argv in (["--debug"] + hpo_report(tmp_path, "foo://bar"), hpo_report(tmp_path, "foo://bar") + ["--debug"]):
        with pytest.raises(StorageError, match="foo://bar"):
            main(argv)
    assert "error:" not in capsys.readouterr().err
    assert split_debug(["md", "--debug", "--out", "x", "--", "--debug"]) == (["md", "--out", "x", "--", "--debug"],
                                                                           True)


def test_truncated_checkpoint_is_one_line_naming_it(tmp_path, tiny_config, capsys):
    from experiments.config import load_config
    from qallegro.train.checkpoint import save_checkpoint
    from qallegro.train.run import write_json

    out = tmp_path / "run"
    last = out / "checkpoints" / "last"
    cfg = load_config("rmd17-aspirin", "cpu", tiny_config)  # the run's record, as `train` writes it
    cfg["model"]["family"] = "allegro"
    os.makedirs(out)
    write_json(str(out / "config.json"), {"config": cfg, "seed": 0})
    save_checkpoint(str(last), {"params": np.arange(4096, dtype=np.float32)})
    for root, _, files in os.walk(out / "checkpoints"):
        for name in files:  # every file of every checkpoint cut to half: nothing intact to fall back to
            path = os.path.join(root, name)
            os.truncate(path, os.path.getsize(path) // 2)
    status = main(["train", "--config", tiny_config, "--max-epochs", "2", "--out", str(out), "--resume"])
    assert status == ERROR_STATUS
    line = one_error_line(capsys)
    assert str(last) in line and "checkpoint" in line


def test_missing_config_file_is_one_line_naming_it(tmp_path, capsys):
    missing = str(tmp_path / "no-such.yaml")
    assert main(["train", "--config", missing, "--out", str(tmp_path / "run")]) == ERROR_STATUS
    assert missing in one_error_line(capsys)


def test_damaged_potential_file_is_an_artifact_error_naming_it(tmp_path, capsys):
    source = os.path.join(os.path.dirname(__file__), "data", "aspirin-allegro-cpu-6min.qallegro")
    damaged = tmp_path / "damaged.qallegro"
    data = open(source, "rb").read()
    damaged.write_bytes(data[: len(data) // 2])  # truncated in the middle
    structure = os.path.join(os.path.dirname(__file__), "data", "aspirin.xyz")
    status = main(["md", "--model", str(damaged), "--structure", structure, "--steps", "2",
                   "--out", str(tmp_path / "md")])
    assert status == ERROR_STATUS
    assert str(damaged) in one_error_line(capsys) or "damaged.qallegro" in capsys.readouterr().err


def test_bad_data_file_is_a_data_error_naming_file_frame_and_atom(tmp_path, capsys):
    path = tmp_path / "bad.extxyz"
    path.write_text("2\nProperties=species:S:1:pos:R:3 energy=-1.0 pbc=\"F F F\"\n"
                    "H 0.0 0.0 0.0\nH 0.0 0.0 nan\n")
    assert main(["train", "--dataset", f"extxyz:{path}", "--out", str(tmp_path / "run")]) == ERROR_STATUS
    line = one_error_line(capsys)
    assert "bad.extxyz" in line and "frame 0" in line and "atom 1" in line


def test_plan_error_is_one_line(tmp_path, capsys):
    assert main(["study", "--stage", "status", "--datasets", "no-such-set", "--out", str(tmp_path / "r"),
                 "--scratch", str(tmp_path / "s"), "--report", str(tmp_path / "report.md")]) == ERROR_STATUS
    assert "no-such-set" in one_error_line(capsys)
    assert not os.path.exists(tmp_path / "r")  # refused before anything was written


def test_unknown_dataset_option_is_one_line(tmp_path, capsys):
    assert main(["train", "--dataset", "no-such-set", "--out", str(tmp_path / "run")]) == ERROR_STATUS
    assert "unknown dataset 'no-such-set'" in one_error_line(capsys)


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    """Exceptions that are not user errors propagate: a library's ValueError, a KeyError, a ZeroDivisionError."""
    import experiments.train

    def buggy(args):
        return np.zeros(3).reshape(2)  # numpy's ValueError: a bug, not bad input

    monkeypatch.setattr(experiments.train, "main", buggy)
    with pytest.raises(ValueError, match="reshape"):
        main(["train", "--out", str(tmp_path / "run")])
    monkeypatch.setattr(experiments.train, "main", lambda args: {}["missing"])
    with pytest.raises(KeyError):
        main(["train", "--out", str(tmp_path / "run")])


def test_user_message_of_each_known_class():
    from qallegro.errors import StorageError, known_errors, user_message

    names = {cls.__name__ for cls in known_errors()}
    assert names == {"DataError", "ArtifactError", "CheckpointError", "PlanError", "SelectionError", "StorageError",
                     "ConfigError"}
    for cls in known_errors():
        assert user_message(cls("first line\n  second line")) == "first line second line"
    assert user_message(FileNotFoundError(2, "No such file or directory", "/x/y.npz")) == \
        "No such file or directory: /x/y.npz"
    assert user_message(StorageError("s")) == "s"
    assert user_message(RuntimeError("not known")) is None
    assert user_message(ValueError("constructed, never raised in the project")) is None
