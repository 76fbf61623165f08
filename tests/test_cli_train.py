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


# ------------------------------------------------------------------------- issue 33's probes
def test_a_fresh_train_into_a_run_folder_is_refused_without_resume_or_overwrite(tmp_path,
                                                                                 capsys):
    import json

    from minillm.cli import main

    assert main(_train_args(tmp_path)) == 0
    pointer = (tmp_path / "latest.json").read_text()
    capsys.readouterr()
    assert main(_train_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "already holds a run" in err
    assert "--resume" in err and "--overwrite-output-dir" in err
    assert (tmp_path / "latest.json").read_text() == pointer  # the old run is untouched
    assert main(_train_args(tmp_path, "--max-steps", "2", "--overwrite-output-dir")) == 0
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 2
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_000002"]


def test_a_negative_looking_value_is_a_value(tmp_path, capsys, no_fit):
    from minillm.cli import main

    assert main(_train_args(tmp_path, "--lr", "-1e-3")) == 2  # not "expected one argument"
    assert "lr=-0.001 must be positive" in capsys.readouterr().err and no_fit == []


def test_a_multi_process_strategy_without_torchrun_warns(tmp_path, capsys, no_fit, monkeypatch):
    from minillm.cli import main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(_train_args(tmp_path, "--strategy", "ddp")) == 0
    assert "--strategy ddp without torchrun runs one process" in capsys.readouterr().err


def test_without_a_terminal_train_logs_one_line_per_log_step(tmp_path, capsys):
    from minillm.cli import main

    assert main(_train_args(tmp_path, "--max-steps", "4", "--log-steps", "2")) == 0
    lines = capsys.readouterr().err.strip().splitlines()  # pytest's stderr is no terminal
    assert [line.split()[:2] for line in lines] == [["step", "2/4"], ["step", "4/4"]]
    assert all(" loss " in line and "tokens/s" in line for line in lines)


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    import json
    import signal
    import subprocess
    import sys

    args = _train_args(tmp_path, "--max-steps", "100000", "--log-steps", "1",
                       "--checkpoint-interval", "0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "minillm", *args], stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stderr.readline().startswith("step 1/")  # training is under way
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + signal.SIGTERM
    last = err.strip().splitlines()[-1]
    step = json.loads((tmp_path / "latest.json").read_text())["step"]
    assert 1 <= step < 100000
    assert last.startswith(f"minillm train: stopped by SIGTERM after step {step}; checkpoint "
                           "saved to") and last.endswith("continue with --resume")


def test_a_damaged_latest_checkpoint_names_the_intact_earlier_one(tmp_path, capsys):
    from minillm.cli import main

    assert main(_train_args(tmp_path, "--max-steps", "4", "--checkpoint-interval", "2")) == 0
    latest = tmp_path / "checkpoints" / "step_000004"
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    capsys.readouterr()
    assert main(_train_args(tmp_path, "--max-steps", "6", "--resume")) == 2
    err = capsys.readouterr().err
    earlier = tmp_path / "checkpoints" / "step_000002"
    assert len(err.strip().splitlines()) == 1 and "corrupt or truncated" in err
    assert f"--resume-from {earlier}" in err
    assert main(_train_args(tmp_path, "--max-steps", "6", "--resume-from", str(earlier))) == 0
    assert "resumed from step 2" in capsys.readouterr().out
