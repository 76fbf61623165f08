"""`minillm train`: a bad run folder or option is one line on stderr before any training, and a
run whose weights overflow exits 2 without a summary."""

import os

import pytest


def _train_args(out, *extra):
    return ["train", "--output-dir", str(out), "--d-model", "16", "--n-layer", "1", "--n-head", "2",
            "--context-length", "16", "--batch-size", "2", "--max-steps", "3",
            "--warmup-steps", "1", "--eval-steps", "0", "--device", "cpu", *extra]


@pytest.fixture
def no_fit(monkeypatch):
    """Trainer.fit replaced by a recorder: a bad path must be found before training."""
    from minillm.training import Trainer

    calls = []
    monkeypatch.setattr(Trainer, "fit", lambda self: calls.append(self.step) or [])
    return calls


@pytest.mark.parametrize("where", ["file", "under_a_file", "read_only", "read_only_fs"])
def test_a_bad_out_dir_is_one_line_before_training(tmp_path, capsys, no_fit, monkeypatch,
                                                    where):
    import errno
    import tempfile

    from minillm.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = {"file": blocker, "under_a_file": blocker / "run", "read_only": tmp_path / "ro" / "run",
           "read_only_fs": tmp_path / "rofs"}
    if where == "read_only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        (tmp_path / "ro").mkdir(mode=0o500)
    if where == "read_only_fs":  # what a read-only mount answers to every file creation
        real = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and str(dir).startswith(str(out[where])):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(_train_args(out[where], "--checkpoint-interval", "0")) == 2
    err = capsys.readouterr().err
    assert no_fit == [] and len(err.strip().splitlines()) == 1
    assert str(out[where]) in err and "choose" in err


def test_a_bad_export_dir_is_found_before_training(tmp_path, capsys, no_fit):
    from minillm.cli import main

    (tmp_path / "a_file").write_text("")
    args = _train_args(tmp_path / "run", "--export-dir", str(tmp_path / "a_file" / "export"))
    assert main(args) == 2
    assert no_fit == [] and "a_file is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--lr", "inf"), ("--lr", "nan"), ("--min-lr", "nan"),
                                        ("--grad-clip", "nan"), ("--weight-decay", "inf")])
def test_non_finite_train_options_are_refused(tmp_path, capsys, no_fit, flag, value):
    from minillm.cli import main

    assert main(_train_args(tmp_path / "run", flag, value)) == 2
    assert f"{flag[2:].replace('-', '_')}={value} must be a finite number" in \
        capsys.readouterr().err
    assert no_fit == []


def test_a_run_whose_weights_overflow_exits_2_and_writes_no_summary(tmp_path, capsys):
    from minillm.cli import main

    assert main(_train_args(tmp_path, "--lr", "1e30", "--checkpoint-interval", "1")) == 2
    err = capsys.readouterr().err
    assert "the run diverged" in err and "step " in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "summary.json").exists()
