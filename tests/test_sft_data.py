"""The instruction set (minillm.data.sft) and the preference set's pieces (minillm.data.preference)."""

import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minillm.data.corpus import data_dir
from minillm.data.preference import (
    bradley_terry_probability,
    build_preference_pairs,
    gold_reward,
    preference_prompts,
)
from minillm.data.sft import (
    EXTRA_PHRASINGS,
    N_SEEN_PHRASINGS,
    TASKS,
    VERIFIABLE_TASKS,
    build_sft_dataset,
    load_sft,
    modernise,
    phrasing_template,
    play_texts,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped():
    return {s: load_sft(s) for s in ("train", "validation", "test")}


def test_plays_cut_from_the_split_files_are_the_manifests_plays():
    manifest = json.loads((data_dir() / "shakespeare" / "manifest.json").read_text())
    plays = play_texts("validation")
    assert list(plays) == manifest["splits"]["validation"]["plays"]
    for name, text in plays.items():
        assert len(text.encode()) == manifest["plays"][name]["bytes"]
        assert text.startswith(name.split("_")[0].upper())  # the title line opens each play


def test_splits_follow_the_corpus_split_by_play_and_do_not_leak(shipped):
    manifest = json.loads((data_dir() / "shakespeare" / "manifest.json").read_text())
    for split, examples in shipped.items():
        plays = {e.play for e in examples} - {"arithmetic"}
        assert plays <= set(manifest["splits"][split]["plays"]), split
        assert {e.split for e in examples} == {split}
    train_prompts = {e.prompt for e in shipped["train"]}
    # the inputs themselves (the line, the sum) never reach training from a held-out split:
    # every test/validation prompt with its phrasing removed must be absent from train
    def inputs(examples):
        out = set()
        for e in examples:
            if e.task == "continue":
                out.add(e.prompt.split(": ", 1)[-1].split("? ", 1)[-1])
            else:
                out.add((e.task, e.response, e.prompt[-30:]))
        return out
    for split in ("validation", "test"):
        assert not {e.prompt for e in shipped[split]} & train_prompts
        assert not inputs(shipped[split]) & inputs(shipped["train"]), split
    import re

    def sums(examples):  # arithmetic problems belong to no play: split by problem
        return {re.search(r"\d+ [+-] \d+", e.prompt).group() for e in examples
                if e.task == "arithmetic"}
    assert len(sums(shipped["test"])) > 10
    assert not sums(shipped["test"]) & sums(shipped["train"])
    assert not sums(shipped["validation"]) & sums(shipped["train"])


def test_held_out_phrasings_appear_only_in_the_test_split(shipped):
    for split in ("train", "validation"):
        assert all(not e.heldout and e.phrasing < N_SEEN_PHRASINGS for e in shipped[split])
    test = shipped["test"]
    held = [e for e in test if e.heldout]
    seen = [e for e in test if not e.heldout]
    assert len(held) == len(seen) and {e.task for e in held} == set(TASKS)
    assert all(e.phrasing == len(TASKS[e.task]) - 1 for e in held)
    # each held-out example asks the same thing as the seen one before it
    pairs = list(zip(test[::2], test[1::2], strict=True))
    assert all(a.response == b.response and not a.heldout and b.heldout for a, b in pairs)


def test_responses_are_what_each_task_asks(shipped):
    by_task = {}
    for e in shipped["train"]:
        by_task.setdefault(e.task, []).append(e)
    for e in by_task["upper"][:50]:
        assert e.response == e.prompt.split(": ", 1)[1].upper()
    for e in by_task["arithmetic"]:
        expr = e.prompt.replace("What is ", "").replace("Compute ", "").replace(
            "Reckon me ", "").replace(" = ?", "").rstrip("?.")
        a, op, b = expr.split()
        assert int(e.response) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    for e in by_task["speaker"][:50]:
        assert f"{e.response}. " in e.prompt
    assert set(VERIFIABLE_TASKS) == set(TASKS) - {"continue"}


def test_modernise_keeps_case_and_whole_words():
    assert modernise("Thou art mine, and thy heart is thine.") == \
        "You art mine, and your heart is your."
    assert modernise("Athens thought theelike") == "Athens thought theelike"


def test_shipped_files_regenerate_byte_for_byte():
    out = subprocess.run([sys.executable, str(ROOT / "data" / "sft" / "make_sft_data.py"),
                          "--check"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_same_seed_same_set_other_seed_other_set():
    a = build_sft_dataset({"validation": 20}, seed=1)
    assert a == build_sft_dataset({"validation": 20}, seed=1)
    assert a != build_sft_dataset({"validation": 20}, seed=2)
    with pytest.raises(ValueError, match="unknown splits"):
        build_sft_dataset({"dev": 3})


def _fields(template: str, prompt: str) -> dict[str, str]:
    """The fields that fill `template` into `prompt` (its placeholders as regex groups)."""
    pattern = re.sub(r"\\{(\w+)\\}", r"(?P<\1>.*)", re.escape(template))
    match = re.fullmatch(pattern, prompt, flags=re.DOTALL)
    assert match is not None, (template, prompt)
    return match.groupdict()


def test_extra_phrasings_reword_train_only_and_keep_every_input():
    sizes = {"train": 40, "validation": 5, "test": 5}
    base = build_sft_dataset(sizes, seed=3)
    wide = build_sft_dataset(sizes, seed=3, extra_phrasings=8)
    assert len(base) == len(wide)
    for a, b in zip(base, wide, strict=True):
        assert (a.task, a.response, a.split, a.play, a.heldout) == \
            (b.task, b.response, b.split, b.play, b.heldout)
        if a.split != "train":
            assert a == b                    # validation and test are untouched
            continue
        assert b.phrasing != len(TASKS[b.task]) - 1      # the held-out phrasing stays unseen
        # the same input, filled into the new phrasing
        fields = _fields(phrasing_template(a.task, a.phrasing), a.prompt)
        assert b.prompt == phrasing_template(b.task, b.phrasing).format(**fields)
    used = {e.phrasing for e in wide if e.split == "train"}
    assert used == set(range(N_SEEN_PHRASINGS)) | set(range(5, 13))
    assert sum(a.prompt != b.prompt for a, b in zip(base, wide, strict=True)) > 100
    with pytest.raises(ValueError, match="extra_phrasings=9"):
        build_sft_dataset(sizes, extra_phrasings=9)


def test_extra_phrasings_are_new_wordings_with_the_tasks_fields():
    for task, extras in EXTRA_PHRASINGS.items():
        assert len(set(extras)) == len(extras) == 8
        assert not set(extras) & set(TASKS[task])
        placeholders = {"speaker": {"{line}", "{text}"}, "arithmetic": {"{expr}"}}.get(task, {"{line}"})
        for t in extras + TASKS[task]:
            assert set(re.findall(r"\{\w+\}", t)) == placeholders, (task, t)


def test_load_sft_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_sft("dev")
    with pytest.raises(ValueError, match="task"):
        load_sft("test", task="poetry")
    with pytest.raises(FileNotFoundError, match="make_sft_data"):
        load_sft("test", folder=tmp_path)


# ---- preferences --------------------------------------------------------------------------
def test_gold_reward_counts_lexicon_words():
    assert gold_reward("O sweet love, what joy!") == pytest.approx(3 / math.sqrt(5))
    assert gold_reward("Death and blood, foul night.") == pytest.approx(-4 / math.sqrt(5))
    assert gold_reward("") == 0.0
    assert gold_reward("the cat") == 0.0


def test_bradley_terry_labels_follow_the_probability():
    """The labels are drawn, so chosen wins about P(a > b) of the time, not always."""
    prompts = [(f"Continue this speech: line {i}", "play") for i in range(2000)]
    cheerful, grim = "sweet love and joy", "death and blood"

    def sample(texts):  # alternate which of the two comes first
        sample.calls += 1
        return [cheerful if (i + sample.calls) % 2 else grim for i in range(len(texts))]
    sample.calls = 0
    pairs = build_preference_pairs(prompts, sample, "train", beta=0.5, seed=3, batch_size=500)
    p = bradley_terry_probability(gold_reward(cheerful), gold_reward(grim), 0.5)
    wins = sum(pair.chosen == cheerful for pair in pairs) / len(pairs)
    assert 0.6 < p < 0.95
    assert abs(wins - p) < 4 * math.sqrt(p * (1 - p) / len(pairs))
    assert all(pair.gold_chosen == gold_reward(pair.chosen) for pair in pairs)
    with pytest.raises(ValueError, match="beta"):
        build_preference_pairs(prompts, sample, "train", beta=0)


def test_tied_pairs_are_resampled_or_dropped():
    """Equal gold rewards carry no preference: the second side is resampled, then dropped."""
    prompts = [(f"Continue this speech: line {i}", "play") for i in range(40)]

    def make_sampler():  # prompt i's k-th sample is cheerful iff k == i % 4, else neutral
        counts: dict[str, int] = {}

        def sample(texts):
            out = []
            for t in texts:
                k = counts.get(t, 0)
                counts[t] = k + 1
                out.append("sweet joy" if k == int(t.split()[-1]) % 4 else "the cat")
            return out
        return sample

    def line(p):
        return int(p.prompt.split()[-1])

    kept = build_preference_pairs(prompts, make_sampler(), "train", batch_size=40,
                                  resample_ties=2)  # i % 4 == 3 needs both rounds
    assert len(kept) == 40 and all(p.gold_chosen != p.gold_rejected for p in kept)
    one = build_preference_pairs(prompts, make_sampler(), "train", batch_size=40,
                                 resample_ties=1)
    assert sorted(line(p) for p in one) == [i for i in range(40) if i % 4 != 3]
    ties = build_preference_pairs(prompts, make_sampler(), "train", batch_size=40)
    assert sum(p.gold_chosen == p.gold_rejected for p in ties) == 20  # kept, coin-flipped
    assert len(build_preference_pairs(prompts, make_sampler(), "train", batch_size=10, n=12,
                                      resample_ties=1)) == 12
    with pytest.raises(ValueError, match="unequal gold rewards"):
        build_preference_pairs(prompts, make_sampler(), "train", batch_size=10, n=35,
                               resample_ties=1)


def test_preference_prompts_are_distinct_and_seeded():
    lines = [(f"line {i}", "play") for i in range(50)]
    a = preference_prompts(lines, 10, seed=0)
    assert a == preference_prompts(lines, 10, seed=0) and len(set(a)) == 10
    with pytest.raises(ValueError, match="distinct"):
        preference_prompts(lines, 51, seed=0)
    random.seed(0)


@pytest.mark.parametrize("folder", ["", "shakespeare_sft"],
                         ids=["from_shakespeare_sft_d128", "from_shakespeare_sft"])
def test_shipped_preference_pairs_match_their_gold_scorer_and_manifest(folder):
    from minillm.data.preference import load_preferences

    where = data_dir() / "preference" / folder
    manifest = json.loads((where / "manifest.json").read_text())
    assert manifest["checkpoint"] == (folder or "shakespeare_sft_d128")
    for split in ("train", "test"):
        pairs = load_preferences(split, where)
        assert len(pairs) == manifest["stats"][split]["pairs"]
        assert {p.split for p in pairs} == {split}
        assert all(p.gold_chosen != p.gold_rejected for p in pairs)  # no coin-flip pairs
        assert manifest["stats"][split]["gold_ties"] == 0
        for p in pairs[:200]:
            assert p.gold_chosen == pytest.approx(gold_reward(p.chosen))
            assert p.gold_rejected == pytest.approx(gold_reward(p.rejected))
            expected = bradley_terry_probability(p.gold_chosen, p.gold_rejected,
                                                 manifest["beta"])
            assert p.p_chosen == pytest.approx(expected)
    test_prompts = {p.prompt for p in load_preferences("test", where)}
    assert not test_prompts & {p.prompt for p in load_preferences("train", where)}
