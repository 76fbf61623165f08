import json
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
    from minillm.data import ByteTokenizer
    from minillm.models import GPT, GPTConfig

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
    return ["train", "--out-dir", str(out), "--d-model", "16", "--n-layer", "1", "--n-head", "2",
            "--context-length", "16", "--batch-size", "2", "--max-steps", "3",
            "--warmup-steps", "1", "--eval-interval", "0", "--device", "cpu", *extra]


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
    # ~2.85 bytes per BPE token: nats per byte is the per-token loss spread over those bytes
    assert 2.5 < summary["val_nats_per_token"] / summary["val_nats_per_byte"] < 3.2
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
