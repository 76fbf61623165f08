"""minillm.data.jsonl: one reader for the SFT and preference files; every bad line is one
`ValueError` naming the file, the line, the field and the fix; blank lines are skipped."""

import json
from dataclasses import asdict

import pytest

from minillm.data.jsonl import read_jsonl
from minillm.data.preference import PreferencePair, load_preferences
from minillm.data.sft import SFTExample, load_sft

GOOD = SFTExample(task="upper", prompt="Upper-case: a", response="A", split="train",
                  play="Hamlet", phrasing=1, heldout=False)


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_blank_lines_are_skipped(tmp_path):
    good = json.dumps(asdict(GOOD))
    path = _write(tmp_path / "train.jsonl", [good, "", "   ", good])
    assert read_jsonl(path, SFTExample) == [GOOD, GOOD]
    assert load_sft("train", tmp_path) == [GOOD, GOOD]


def _with(**changes):
    return json.dumps({**asdict(GOOD), **changes})


@pytest.mark.parametrize("bad,message", [
    ("{not json", "not valid JSON (Expecting property name enclosed in double quotes at "
                  "column 2); fix the line or remove it"),
    ("[1, 2]", "a list, not a JSON object; write one object per line with the fields"),
    (json.dumps({k: v for k, v in asdict(GOOD).items() if k != "response"}),
     "field 'response' is missing; every line needs task, prompt, response, split, play, "
     "phrasing, heldout"),
    (_with(source="x"), "field 'source' is unknown; the fields are task, prompt, response, "
                        "split, play, phrasing, heldout (remove or rename it)"),
    (_with(heldout="no"), "field 'heldout' is a str ('no'); it must be a bool (true or false)"),
    (_with(phrasing=True), "field 'phrasing' is a bool (True); it must be a whole number"),
    (_with(prompt=3), "field 'prompt' is a int (3); it must be a string"),
])
def test_a_bad_line_names_the_file_the_line_and_the_field(tmp_path, bad, message):
    good = json.dumps(asdict(GOOD))
    path = _write(tmp_path / "train.jsonl", [good, "", bad, good])  # the bad one is line 3
    with pytest.raises(ValueError) as error:
        load_sft("train", tmp_path)
    assert str(error.value).startswith(f"{path}:3: {message}")
    assert "\n" not in str(error.value)


def test_preference_files_go_through_the_same_reader(tmp_path):
    pair = PreferencePair("p", "c", "r", 1, 0.5, 0.7, "Hamlet", "train")  # int for a float: ok
    path = _write(tmp_path / "train.jsonl", [json.dumps(asdict(pair)), ""])
    assert load_preferences("train", tmp_path) == [pair]
    _write(path, [json.dumps({**asdict(pair), "gold_chosen": "high"})])
    with pytest.raises(ValueError, match=r"train.jsonl:1: field 'gold_chosen' is a str \('high'\); "
                                         "it must be a number"):
        load_preferences("train", tmp_path)


def test_a_bad_sft_file_is_one_line_from_the_command(tmp_path, capsys):
    from minillm.cli import main

    _write(tmp_path / "train.jsonl", [_with(heldout="no")])
    _write(tmp_path / "validation.jsonl", [_with()])
    assert main(["sft", "--checkpoint", "shakespeare_byte", "--output-dir", str(tmp_path / "run"),
                 "--data", str(tmp_path), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"minillm sft: error: {tmp_path / 'train.jsonl'}:1: field 'heldout' "
                           "is a str ('no'); it must be a bool (true or false)")
