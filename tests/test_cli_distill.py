"""`minillm distill` (minillm.alignment.distill_run): end to end in a subprocess on a tiny teacher,
every loss for a few steps, a feature run resumed bit for bit, and a teacher / student
vocabulary mismatch refused with both sizes and the fix."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minillm.cli import main
from minillm.data import load_corpus
from minillm.io import load_tensors
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import ByteTokenizer
from minillm.training import text_bits_per_byte

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ["--d-model", "16", "--n-layer", "1", "--n-head", "2"]
RUN = ["--batch-size", "4", "--log-steps", "1", "--eval-steps", "2", "--eval-batches", "1",
       "--device", "cpu", "--threads", "1", "--seed", "0", "--warmup-steps", "1"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A tiny byte-level GPT saved as a checkpoint folder (config, weights, tokenizer)."""
    folder = tmp_path_factory.mktemp("teacher") / "teacher"
    torch.manual_seed(0)
    model = GPT(GPTConfig(context_length=32, d_model=32, n_layer=2, n_head=2, init_std=0.1))
    model.save(folder, extra_files={"tokenizer.json": ByteTokenizer().to_dict()})
    return folder


def test_distill_end_to_end_in_a_subprocess(teacher, tmp_path):
    out, export = tmp_path / "run", tmp_path / "student"
    cmd = [sys.executable, "-m", "minillm", "distill", "--teacher", str(teacher),
           "--output-dir", str(out), "--max-steps", "4", "--loss", "kd", "--temperature", "2",
           "--alpha", "0.5", "--final-eval", "--export-dir", str(export), *STUDENT, *RUN]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    assert printed == summary
    assert summary["step"] == 4 and summary["loss"] == "kd"
    assert "step 4/4 loss" in done.stderr  # one log line per step on a non-terminal stderr
    # the student is smaller, and its val bits/byte is the course's scorer on the exported model
    student = GPT.from_checkpoint(export)
    assert (student.config.d_model, student.config.n_layer) == (16, 1)
    assert student.config.vocab_size == 257 and student.config.context_length == 32
    assert summary["student_params"] == sum(p.numel() for p in student.parameters())
    assert summary["student_params"] < summary["teacher_params"] / 2
    val = load_corpus("shakespeare", "validation")
    assert summary["val_bits_per_byte"] == pytest.approx(
        text_bits_per_byte(student.eval(), val, ByteTokenizer()), rel=1e-6)
    assert math.isfinite(summary["teacher_val_bits_per_byte"])
    assert (out / "latest.json").exists()
    training = json.loads((export / "training.json").read_text())
    assert training["distill_config"]["temperature"] == 2.0
    assert [h["step"] for h in training["history"]] == [1, 2, 3, 4]
    assert all("distill_loss" in h and "lm_loss" in h for h in training["history"])


@pytest.mark.parametrize("loss", ["reverse_kl", "gjsd", "seqkd", "feature"])
def test_each_loss_runs_and_exports_a_plain_student(teacher, tmp_path, capsys, loss):
    extra = ["--teacher-samples", "8", "--prompt-length", "4"] if loss == "seqkd" else []
    code = main(["distill", "--teacher", str(teacher), "--output-dir", str(tmp_path / "run"),
                 "--max-steps", "3", "--loss", loss, "--beta", "0.3",
                 "--export-dir", str(tmp_path / "student"), *extra, *STUDENT, *RUN])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["step"] == 3 and math.isfinite(summary["final_train_loss"])
    assert math.isfinite(summary["final_val_loss"])
    student = GPT.from_checkpoint(tmp_path / "student")  # bare GPT weights, feature run included
    assert student.config.d_model == 16
    if loss == "seqkd":
        assert summary["teacher_seconds"] > 0
        assert summary["final_lm_loss"] == pytest.approx(summary["final_train_loss"])
    if loss == "feature":  # the checkpoint keeps the projection beside the student
        ckpt = json.loads((tmp_path / "run" / "latest.json").read_text())["path"]
        names = load_tensors(tmp_path / "run" / ckpt / "model.safetensors")
        assert names["projection.weight"].shape == (32, 16)


def test_feature_run_resumes_bit_for_bit(teacher, tmp_path, capsys):
    def run(folder, steps, *more):
        code = main(["distill", "--teacher", str(teacher), "--output-dir", str(folder),
                     "--max-steps", str(steps), "--loss", "feature", "--checkpoint-interval", "2",
                     "--lr", "1e-2", *STUDENT, *RUN, *more])
        assert code == 0, capsys.readouterr().err

    run(tmp_path / "whole", 4)
    run(tmp_path / "split", 2)
    run(tmp_path / "split", 4, "--resume")
    assert "resumed from step 2" in capsys.readouterr().out
    a = load_tensors(tmp_path / "whole/checkpoints/step_000004/model.safetensors")
    b = load_tensors(tmp_path / "split/checkpoints/step_000004/model.safetensors")
    assert a.keys() == b.keys() and "projection.weight" in a
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("option, sizes", [
    (["--vocab-size", "300"], ("257 ids", "300 ids")),
    (["--tokenizer", "shakespeare_bpe_2048"], ("257 ids", "2048 ids")),
])
def test_vocabulary_mismatch_is_refused_naming_both_sizes(teacher, tmp_path, capsys, option,
                                                          sizes):
    code = main(["distill", "--teacher", str(teacher), "--output-dir", str(tmp_path / "run"),
                 "--max-steps", "3", *option, *RUN])
    err = capsys.readouterr().err
    assert code == 2
    assert all(size in err for size in sizes), err
    assert "give the student the teacher's tokenizer" in err
    assert not (tmp_path / "run" / "latest.json").exists()


def test_bad_options_are_refused_with_the_fix(teacher, tmp_path, capsys):
    base = ["distill", "--teacher", str(teacher), "--output-dir", str(tmp_path / "run"), *RUN]
    assert main([*base, "--loss", "seqkd", "--alpha", "0.3"]) == 2
    assert "drop --alpha" in capsys.readouterr().err
    assert main([*base, "--loss", "kl"]) == 2
    assert "choose one of" in capsys.readouterr().err
    assert main([*base, "--context-length", "64"]) == 2
    assert "teacher's context_length=32" in capsys.readouterr().err
