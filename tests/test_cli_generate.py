"""`minillm generate`: a failing command is one line, a checkpoint without its tokenizer (or with
another vocabulary's) is refused, and every decoding option of the library is exposed."""

import math
import os

import pytest
import torch
from saved_models import rewrite_weights, saved_model

from minillm.tokenizers import BPETokenizer


def test_an_os_error_in_a_command_is_one_line(tmp_path, capsys, monkeypatch):
    from minillm import cli

    def broken(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr(cli, "cmd_generate", broken)  # build_parser reads the global
    assert cli.main(["generate", "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "Permission denied" in err and str(tmp_path / "x") in err


def test_generate_on_a_nan_checkpoint_is_one_line(tmp_path, capsys):
    from minillm.cli import main

    saved_model(tmp_path / "m")
    rewrite_weights(tmp_path / "m", lambda k, v: v * math.nan)
    assert main(["generate", "--checkpoint", str(tmp_path / "m"), "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "NaN or infinity" in err


# ------------------------------------------------------------------ the tokenizer a model needs
@pytest.fixture(scope="module")
def small_bpe():
    return BPETokenizer.train("to be or not to be, that is the question " * 20, vocab_size=300)


def test_a_bpe_model_without_its_tokenizer_is_refused(tmp_path, capsys, small_bpe):
    from minillm.cli import main

    saved_model(tmp_path / "m", vocab_size=small_bpe.vocab_size, tokenizer=False)
    assert main(["generate", "--checkpoint", str(tmp_path / "m"), "--prompt", "to be",
                 "--max-new-tokens", "40"]) == 2
    err = capsys.readouterr().err
    assert "no tokenizer.json" in err and f"vocab_size={small_bpe.vocab_size}" in err


def test_a_tokenizer_of_another_vocabulary_is_refused(tmp_path, capsys, small_bpe):
    from minillm.cli import main

    saved_model(tmp_path / "m", vocab_size=257, tokenizer=small_bpe)  # a byte model
    assert main(["generate", "--checkpoint", str(tmp_path / "m"), "--max-new-tokens", "2"]) == 2
    assert "is not this model's tokenizer" in capsys.readouterr().err


# ------------------------------------------------------------------ generate's decoding options
def _generate_cli(capsys, folder, *flags):
    from minillm.cli import main

    assert main(["generate", "--checkpoint", str(folder), "--prompt", "To be",
                 "--max-new-tokens", "12", "--device", "cpu", *flags]) == 0
    return capsys.readouterr().out.rstrip("\n")


def _generate_lib(model, seed=0, **kwargs):
    from minillm.generation import generate
    from minillm.tokenizers import ByteTokenizer

    tok = ByteTokenizer()
    out = generate(model, torch.tensor([tok.encode("To be")]), 12,
                   generator=torch.Generator().manual_seed(seed), **kwargs)
    return tok.decode(out[0].tolist())


def test_generate_exposes_every_decoding_option(tmp_path, capsys):
    model = saved_model(tmp_path / "m").eval()
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

    saved_model(tmp_path / "m")
    assert main(["generate", "--checkpoint", str(tmp_path / "m"), "--top-p", "2"]) == 2
    assert "top_p" in capsys.readouterr().err
    options = {a.dest for a in build_parser()._subparsers._group_actions[0]
               .choices["generate"]._actions}
    from dataclasses import fields

    assert {f.name for f in fields(GenerationConfig)} - options == {"num_assistant_tokens"}


# ------------------------------------------------------------------------- issue 33's probes
def _generate(*args):
    from minillm.cli import main

    return main(["generate", *args])


def test_more_new_tokens_than_the_context_holds_are_refused_unless_sliding(tmp_path, capsys):
    saved_model(tmp_path / "m")  # context_length 32
    assert _generate("--checkpoint", str(tmp_path / "m"), "--prompt", "ab",
                     "--max-new-tokens", "1000000000") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "pass --max-new-tokens 30 or less, or --sliding-window" in err
    assert _generate("--checkpoint", str(tmp_path / "m"), "--prompt", "ab",
                     "--max-new-tokens", "40", "--sliding-window", "--no-stream") == 0
    assert capsys.readouterr().out.startswith("ab")


def test_generate_is_greedy_by_default_and_samples_with_do_sample(tmp_path, capsys):
    import torch

    from minillm.generation import generate
    from minillm.tokenizers import ByteTokenizer

    model = saved_model(tmp_path / "m")
    tok = ByteTokenizer()
    greedy = generate(model, torch.tensor([tok.encode("to")]), max_new_tokens=12,
                      do_sample=False)
    outputs = []
    for args in ([], ["--seed", "1"], ["--do-sample", "--seed", "1"],
                 ["--do-sample", "--seed", "2"]):
        assert _generate("--checkpoint", str(tmp_path / "m"), "--prompt", "to",
                         "--max-new-tokens", "12", "--no-stream", *args) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] == tok.decode(greedy[0].tolist()) + "\n"  # seed-free
    assert len({outputs[0], outputs[2], outputs[3]}) == 3  # sampled, and by the seed


def test_streamed_and_buffered_text_are_the_same(tmp_path, capsys):
    saved_model(tmp_path / "m")
    texts = []
    for flag in ("--stream", "--no-stream"):
        assert _generate("--checkpoint", str(tmp_path / "m"), "--prompt", "é ",
                         "--max-new-tokens", "20", "--do-sample", flag) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and texts[0].startswith("é ")


def test_checkpoint_may_be_a_run_folder_or_a_shipped_name(tmp_path, capsys):
    from minillm.cli import main

    assert main(["train", "--output-dir", str(tmp_path / "run"), "--d-model", "16",
                 "--n-layer", "1", "--n-head", "2", "--context-length", "16", "--batch-size",
                 "2", "--max-steps", "2", "--warmup-steps", "1", "--eval-steps", "0"]) == 0
    capsys.readouterr()
    for checkpoint in (str(tmp_path / "run"), "shakespeare_byte"):
        assert _generate("--checkpoint", checkpoint, "--prompt", "ROMEO.",
                         "--max-new-tokens", "3", "--no-stream") == 0
        out = capsys.readouterr().out
        assert out.startswith("ROMEO.") and len(out) > len("ROMEO.\n")  # and new text


def test_an_invalid_utf8_prompt_is_one_line(tmp_path, capsys):
    saved_model(tmp_path / "m")
    prompt = b"ab\xff".decode("utf-8", "surrogateescape")  # what Python makes of such argv
    assert _generate("--checkpoint", str(tmp_path / "m"), "--prompt", prompt) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("minillm generate: error: --prompt is not valid UTF-8 (byte 0xff at "
                           "character 2); pass UTF-8 text")


def test_ctrl_c_ends_generate_cleanly_keeping_the_text(tmp_path):
    import signal
    import subprocess
    import sys

    saved_model(tmp_path / "m")
    proc = subprocess.Popen([sys.executable, "-m", "minillm", "generate", "--checkpoint",
                             str(tmp_path / "m"), "--prompt", "ab", "--max-new-tokens",
                             "100000000", "--sliding-window", "--stream", "--do-sample"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            # an xdist worker ignores SIGINT and a child inherits that (Python then
                            # installs no KeyboardInterrupt handler): give it the default back
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = proc.stdout.read(40)  # the prompt and 38 generated bytes have arrived
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=180)   # a loaded CI machine is slow to shut torch down
    text = (first + out).decode("utf-8", "replace")
    assert proc.returncode == 130 and text.startswith("ab") and len(first + out) > 40
    assert b"Traceback" not in err
    assert err.decode().startswith("minillm generate: interrupted after ")
