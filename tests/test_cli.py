import json
import math
import re
import subprocess
import sys

import nbformat
import pytest

from minillm.cli import main
from minillm.course import find_chapters, parse_parameter


def _notebook(path, source_after_params):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("steps = 2")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(source_after_params)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_parse_parameter():
    assert parse_parameter("max_steps=50") == ("max_steps", 50)
    assert parse_parameter("device=cpu") == ("device", "cpu")
    assert parse_parameter("full=True") == ("full", True)
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_parameter("oops")


@pytest.mark.slow
def test_course_run_executes_with_parameters_and_reports_failures(tmp_path, monkeypatch, capsys):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    _notebook(chapters / "01_ok.ipynb", "print('steps', steps)\nassert steps == 5")
    _notebook(chapters / "02_broken.ipynb", "raise RuntimeError('boom')")
    monkeypatch.chdir(tmp_path)
    assert [p.name for p in find_chapters()] == ["01_ok.ipynb", "02_broken.ipynb"]
    with pytest.raises(ValueError, match="no chapter matches '07'"):
        find_chapters(["07"])

    assert main(["course", "run", "01", "-p", "steps=5", "--output-dir", "out"]) == 0
    table = capsys.readouterr().out
    assert "01_ok" in table and "ok" in table
    # progress as it goes: a line when each chapter starts (with its cells) and when it ends
    assert "[1/1] 01_ok: 2 code cells ..." in table and "[1/1] 01_ok: ok in" in table
    executed = json.loads((tmp_path / "out" / "01_ok.ipynb").read_text())
    assert any("steps 5" in "".join(o.get("text", "")) for c in executed["cells"]
               for o in c.get("outputs", []))

    assert main(["course", "run", "--output-dir", "out"]) == 1
    table = capsys.readouterr().out
    assert "02_broken  failed" in table and "boom" in table
    # a failure names the cell and the error
    assert "[2/2] 02_broken: failed in" in table
    assert re.search(r"cell In\[\d+\]: RuntimeError: boom", table)


def test_generate_command_prints_text(tmp_path, tiny_model):
    from minillm.models import GPT, GPTConfig
    from minillm.tokenizers import ByteTokenizer

    model = GPT(GPTConfig(vocab_size=257, context_length=16, d_model=32, n_layer=1, n_head=2))
    model.save(tmp_path / "ckpt", extra_files={"tokenizer.json": ByteTokenizer().to_dict()})
    out = subprocess.run([sys.executable, "-m", "minillm", "generate", "--checkpoint",
                          str(tmp_path / "ckpt"), "--prompt", "To be", "--max-new-tokens", "5"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("To be")


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _train_args(out, *extra):
    return ["train", "--output-dir", str(out), "--d-model", "16", "--n-layer", "1", "--n-head", "2",
            "--context-length", "16", "--batch-size", "2", "--max-steps", "3",
            "--warmup-steps", "1", "--eval-steps", "0", "--device", "cpu", *extra]


def test_train_records_the_command_it_was_given_and_resumes_a_finished_run(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(sys, "argv", ["some_script.py", "--unrelated"])
    args = _train_args(tmp_path / "run", "--export-dir", str(tmp_path / "export"))
    assert main(args) == 0
    record = json.loads((tmp_path / "export" / "training.json").read_text())
    assert record["command"] == "minillm " + " ".join(args)
    # a checkpoint killed before its first log entry has no history; resuming it at its
    # max_steps trains nothing and still reports
    meta_path = next((tmp_path / "run" / "checkpoints").iterdir()) / "trainer.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "history": []}))
    assert main(_train_args(tmp_path / "run", "--resume")) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["final_train_loss"] is None


def test_train_resume_with_other_sizes_is_a_clear_error(tmp_path, capsys):
    assert main(_train_args(tmp_path)) == 0
    assert main(_train_args(tmp_path, "--resume", "--d-model", "32")) == 2
    assert "shapes (saved vs model) differ" in capsys.readouterr().err


def test_train_with_a_saved_tokenizer_exports_it_and_scores_per_byte(tmp_path):
    from minillm.data import data_dir
    from minillm.models import GPT
    from minillm.tokenizers import BPETokenizer, tokenizer_for_model

    bpe = data_dir() / "tokenizers" / "shakespeare_bpe_2048"
    args = _train_args(tmp_path / "run", "--tokenizer", str(bpe), "--final-eval",
                       "--export-dir", str(tmp_path / "export"))
    assert main(args) == 0
    model = GPT.from_checkpoint(tmp_path / "export")
    assert model.config.vocab_size == 2048                       # the vocabulary follows it
    tok = tokenizer_for_model(tmp_path / "export", model.config.vocab_size)  # ranks inline
    assert tok.ranks == BPETokenizer.load(bpe).ranks
    summary = json.loads((tmp_path / "export" / "training.json").read_text())["summary"]
    # --final-eval is the course's one scorer: per byte of the text, whatever the tokens
    from minillm.data import load_corpus
    from minillm.training import text_bits_per_byte

    rescored = text_bits_per_byte(model, load_corpus("shakespeare", "validation"), tok)
    assert summary["val_bits_per_byte"] == pytest.approx(rescored, rel=1e-6)
    assert summary["val_nats_per_byte"] == pytest.approx(rescored * math.log(2), rel=1e-9)
    assert main(_train_args(tmp_path / "other", "--tokenizer", str(tmp_path / "none"))) == 2


def test_generate_reads_a_tokenizer_saved_with_its_rank_file(tmp_path):
    from minillm.models import GPT, GPTConfig
    from minillm.tokenizers import BPETokenizer

    tok = BPETokenizer.train("to be or not to be " * 20, vocab_size=262)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=16, d_model=16, n_layer=1,
                          n_head=2))
    model.save(tmp_path / "ckpt")
    tok.save(tmp_path / "ckpt")  # tokenizer.json pointing at tokenizer.tiktoken
    assert main(["generate", "--checkpoint", str(tmp_path / "ckpt"), "--prompt", "to be",
                 "--max-new-tokens", "3"]) == 0


def test_run_chapters_needs_somewhere_to_write():
    from minillm.course import run_chapters

    with pytest.raises(ValueError, match="give output_dir"):
        run_chapters(["03"], output_dir=None)


# ------------------------------------------------------------------ one convention, every command
def _commands(parser, prefix=()):
    """(name, parser) of every command that takes options: `train`, ..., `course run`."""
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(prefix), parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _commands(child, (*prefix, name))


def _options(parser):
    """Every option of `parser` shown in --help (deprecated spellings are hidden)."""
    import argparse

    return [a for a in parser._actions if a.option_strings and a.help is not argparse.SUPPRESS
            and not isinstance(a, argparse._HelpAction)]


def _deprecated(parser):
    import argparse

    return [s for a in parser._actions if a.help is argparse.SUPPRESS for s in a.option_strings]


def test_every_option_of_every_command_has_a_help_line():
    from minillm.cli import build_parser

    commands = dict(_commands(build_parser()))
    assert set(commands) == {"course run", "data prepare", "train", "sft", "dpo", "distill",
                             "eval", "generate", "checkpoint consolidate"}
    for name, parser in commands.items():
        for action in [*_options(parser), *(a for a in parser._actions if not a.option_strings)]:
            text = re.sub(r"\((default: .*|required)\)$", "", action.help or "").strip()
            assert text, f"minillm {name} {action.option_strings or action.dest}: no help"
        assert f"usage: minillm {name}" in parser.format_help()  # it renders (% is escaped)


def test_flag_names_are_one_convention_across_commands():
    import argparse
    from dataclasses import fields

    from minillm.alignment import DPOConfig
    from minillm.cli import build_parser
    from minillm.generation import GenerationConfig
    from minillm.models import GPTConfig
    from minillm.training import TrainConfig

    bool_fields = {f.name for cls in (GPTConfig, TrainConfig, GenerationConfig, DPOConfig)
                   for f in fields(cls) if str(f.type) in ("bool", "bool | None")}
    assert {"bias", "compile", "do_sample"} <= bool_fields
    banned = {"--out-dir", "--out", "--steps", "--eval-every", "--eval-interval", "--base",
              "--log-interval"}
    shown = {}
    for name, parser in _commands(build_parser()):
        shown[name] = {s for a in _options(parser) for s in a.option_strings}
        assert not banned & shown[name], (name, banned & shown[name])
        # every boolean is --flag / --no-flag (no `--bias true`, no bare store_true)
        for action in _options(parser):
            boolean = isinstance(action.default, bool) or action.nargs == 0 or \
                action.dest in bool_fields
            assert not boolean or isinstance(action, argparse.BooleanOptionalAction), \
                (name, action.option_strings)
    # the same concept has the same name wherever it exists
    for flag, commands in {"--output-dir": {"course run", "data prepare", "train", "sft", "dpo",
                                            "distill", "checkpoint consolidate"},
                           "--max-steps": {"train", "sft", "dpo", "distill"},
                           "--eval-steps": {"train", "sft", "dpo", "distill"},
                           "--log-steps": {"train", "sft", "dpo", "distill"},
                           "--checkpoint": {"sft", "dpo", "eval", "generate"}}.items():
        assert {c for c, flags in shown.items() if flag in flags} == commands, flag
    # --top-k is sampling's alone; MoE's experts per token is --num-experts-per-tok
    assert {c for c, flags in shown.items() if "--top-k" in flags} == {"generate"}
    assert "--num-experts-per-tok" in shown["train"] and "--num-experts-per-tok" in shown["distill"]
    assert not {c for c, flags in shown.items() if "--model" in flags}
    # the old spellings are still there, hidden, as deprecated aliases
    old = {name: set(_deprecated(parser)) for name, parser in _commands(build_parser())}
    assert old["train"] == {"--out-dir", "--eval-interval", "--log-interval", "--top-k"}
    assert old["sft"] == {"--base", "--out-dir", "--eval-interval", "--log-interval"}
    assert old["dpo"] == {"--out", "--steps", "--eval-every", "--log-interval"}


@pytest.mark.parametrize("argv,expected", [
    (["train", "--out-dir", "X"], {"output_dir": "X"}),
    (["train", "--output-dir", "X", "--eval-interval", "5"], {"eval_steps": 5}),
    (["train", "--output-dir", "X", "--top-k", "1"], {"num_experts_per_tok": 1}),
    (["train", "--output-dir", "X", "--bias", "false"], {"bias": False}),
    (["train", "--output-dir", "X", "--compile=true"], {"compile": True}),
    (["sft", "--base", "B", "--out-dir", "X"], {"checkpoint": "B", "output_dir": "X"}),
    (["sft", "--checkpoint", "B", "--output-dir", "X", "--packing", "false", "--text-rows", "0"],
     {"packing": False}),
    (["dpo", "--out", "data/dpo/runs_lr2e-5.json"],
     {"output_dir": "data/dpo", "run_name": "runs_lr2e-5"}),
    (["dpo", "--output-dir", "X", "--steps", "150", "--eval-every", "25"],
     {"max_steps": 150, "eval_steps": 25}),
    (["generate", "--checkpoint", "C", "--do-sample", "true"], {"do_sample": True}),
])
def test_old_spellings_still_parse_and_say_what_replaces_them(argv, expected, capsys):
    from minillm.cli import build_parser

    args = build_parser().parse_args(argv)
    assert {k: getattr(args, k) for k in expected} == expected
    err = capsys.readouterr().err
    assert re.search(rf"minillm {argv[0]}: --[a-z-]+[ =]?\S* is deprecated; use --", err), err


def test_the_deprecation_message_names_the_new_flag(capsys):
    from minillm.cli import build_parser

    assert build_parser().parse_args(["train", "--out-dir", "X"]).output_dir == "X"
    assert capsys.readouterr().err == "minillm train: --out-dir is deprecated; use --output-dir\n"
    build_parser().parse_args(["train", "--output-dir", "X", "--bias", "false"])
    assert capsys.readouterr().err == "minillm train: --bias false is deprecated; use --no-bias\n"
    build_parser().parse_args(["train", "--output-dir", "X"])
    assert capsys.readouterr().err == ""  # the new spellings say nothing


@pytest.mark.parametrize("argv,message", [
    (["train"], "required: --output-dir"),
    (["sft", "--output-dir", "X"], "required: --checkpoint"),
    (["dpo"], "required: --output-dir"),
    (["sft", "--checkpoint", "B", "--output-dir", "X", "--no-packing"],
     "--text-rows 4 needs --packing (text rows join the packed rows); pass --text-rows 0 to pad"),
    (["sft", "--checkpoint", "B", "--output-dir", "X", "--lora-dora"],
     "need --lora-r (the adapter's rank), e.g. --lora-r 8"),
])
def test_bad_combinations_are_usage_errors_naming_the_fix(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and f"minillm {argv[0]}: error: " in err and message in err
    assert "Traceback" not in err


def test_dpo_options_are_the_dpo_config():
    from minillm.alignment import DPOConfig
    from minillm.cli import build_parser
    from minillm.cli_options import config_kwargs

    args = build_parser().parse_args(["dpo", "--output-dir", "out", "--runs", "dpo:0.1",
                                      "simpo:2.0", "--max-steps", "150", "--eval-steps", "25"])
    assert DPOConfig(**config_kwargs(args, DPOConfig)) == DPOConfig(
        output_dir="out", runs=["dpo:0.1", "simpo:2.0"], max_steps=150, eval_steps=25)


def test_a_bad_dpo_option_is_one_line_naming_the_field(tmp_path, capsys):
    assert main(["dpo", "--output-dir", str(tmp_path), "--runs", "dpo:-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "runs: 'dpo:-1': beta=-1.0" in err
    assert not list(tmp_path.iterdir())  # refused before anything ran


# ------------------------------------------------------------------------- issue 33's probes
def test_every_help_builds_without_any_data(monkeypatch, capsys):
    """No default touches the data folder when the parser is built: with MINILLM_DATA naming
    nothing (data_dir() then raises), `--help` of every command still prints."""
    from minillm.cli import build_parser, main
    from minillm.data import data_dir

    monkeypatch.setenv("MINILLM_DATA", "/nonexistent/minillm-data")
    with pytest.raises(FileNotFoundError, match="MINILLM_DATA=/nonexistent/minillm-data"):
        data_dir()
    commands = [name.split() for name, _ in _commands(build_parser())]
    assert {"train", "sft", "dpo", "generate"} <= {c[0] for c in commands}
    for command in [[], *commands]:
        with pytest.raises(SystemExit) as done:
            main([*command, "--help"])
        assert done.value.code == 0 and "usage: minillm" in capsys.readouterr().out


def test_data_dir_prefers_minillm_data_then_the_wheels_then_the_clones(monkeypatch, tmp_path):
    from pathlib import Path

    import minillm.data.corpus as corpus

    monkeypatch.delenv("MINILLM_DATA", raising=False)
    clone = Path(corpus.__file__).resolve().parents[2] / "data"
    assert corpus.data_dir() == clone  # this checkout: no minillm/_data
    monkeypatch.setenv("MINILLM_DATA", str(tmp_path))
    assert corpus.data_dir() == tmp_path
    fake = tmp_path / "site" / "minillm"  # an installed copy: minillm/_data beside the code
    (fake / "data").mkdir(parents=True)
    (fake / "_data").mkdir()
    monkeypatch.setattr(corpus, "__file__", str(fake / "data" / "corpus.py"))
    monkeypatch.delenv("MINILLM_DATA")
    assert corpus.data_dir() == fake / "_data"
    (fake / "_data").rmdir()
    with pytest.raises(FileNotFoundError, match="set MINILLM_DATA to a clone's data/ folder"):
        corpus.data_dir()


@pytest.mark.parametrize("args,message", [
    (["--eval-steps", "0"], "eval_steps=0 must be positive"),
    (["--eval-every", "0"], "eval_steps=0 must be positive"),  # the probe's old spelling
    (["--runs", "dpo:0.1", "nope:0.1"], "runs: 'nope:0.1': method='nope'; choose one of"),
    (["--runs", "dpo"], "write METHOD:BETA"),
    (["--max-steps", "0"], "max_steps=0 must be positive"),
])
def test_dpo_refuses_bad_arguments_before_any_compute(monkeypatch, capsys, tmp_path, args,
                                                      message):
    from minillm.alignment import dpo_run
    from minillm.cli import main

    loaded = []
    monkeypatch.setattr(dpo_run, "load_model_and_tokenizer", lambda *a: loaded.append(a))
    assert main(["dpo", "--output-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err  # (after --eval-every's deprecation note)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err
    assert loaded == []


def test_dpo_refuses_an_unwritable_output_before_any_compute(monkeypatch, capsys, tmp_path):
    from minillm.alignment import dpo_run
    from minillm.cli import main

    loaded = []
    monkeypatch.setattr(dpo_run, "load_model_and_tokenizer", lambda *a: loaded.append(a))
    (tmp_path / "a_file").write_text("")
    for out in (["--output-dir", str(tmp_path / "a_file")],
                ["--out", str(tmp_path / "a_file" / "runs.json")]):
        assert main(["dpo", *out]) == 2
        err = capsys.readouterr().err
        assert "a_file is a file, not a folder; choose another path" in err and loaded == []
