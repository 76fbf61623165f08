"""The course's instruction set: verifiable tasks in the Shakespeare world, made by code.

Instruction tuning (Wei et al. 2021, FLAN, arXiv:2109.01652; Ouyang et al. 2022, InstructGPT,
arXiv:2203.02155; the survey's §5.1) trains on (instruction, response) pairs. FLAN's lesson
is that *many phrasings* of each task and held-out templates tell whether tuning learned the
task or the template. This set is FLAN in miniature, sized for a 1.2M-parameter byte model:

    task            input (from a play)                 response
    speaker         two short speeches and one line     the speaker's name, e.g. "CASSIUS"
    upper           a short line                        the line in capitals
    reverse_words   a line of 3-6 words                 the words in reverse order
    count_words     a line of 1-9 words                 the number, e.g. "5"
    modernise       a line with thou/thee/thy/...       you/your/have/do/does instead
    arithmetic      a + b or a - b, numbers 0-20        the result, e.g. "12"
    continue        the first line of a speech          its next line (open-ended: no exact answer)

Every task has five phrasings; the last one is *held out*: never in train or validation, it is
used on the test inputs as a second test set (`heldout=True`). Splits follow the corpus's
split by play (data/shakespeare: validation = Macbeth, Much Ado; test = Julius Caesar, Twelfth
Night), so no test line was ever seen in training; arithmetic problems, which belong to no
play, are split by a hash of the problem. Generation is deterministic given `seed`
(`random.Random`), so `data/sft/make_sft_data.py` regenerates the shipped files byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from minillm.data.corpus import SPLITS, data_dir
from minillm.data.jsonl import read_jsonl

__all__ = ["EXTRA_PHRASINGS", "TASKS", "VERIFIABLE_TASKS", "SFTExample", "Speech",
           "build_sft_dataset", "load_sft", "modernise", "phrasing_template", "play_texts",
           "speeches", "write_sft_dataset"]

# ---- the tasks and their phrasings (the last of each is held out) ----------------------------
TASKS: dict[str, tuple[str, ...]] = {
    "speaker": (
        "Who speaks the line \"{line}\"?\n{text}",
        "Name the speaker of \"{line}\".\n{text}",
        "{text}\nWhich character says \"{line}\"?",
        "Read the scene and tell me who says \"{line}\".\n{text}",
        "{text}\nSay who spoke these words: \"{line}\"",
    ),
    "upper": (
        "Write this line in capital letters: {line}",
        "Upper-case the line: {line}",
        "Convert to uppercase: {line}",
        "Shout this line: {line}",
        "Put every letter of this line in capitals: {line}",
    ),
    "reverse_words": (
        "Reverse the order of the words: {line}",
        "Say these words backwards, last word first: {line}",
        "Write the words in reverse order: {line}",
        "Turn this line around word by word: {line}",
        "List the words of this line from last to first: {line}",
    ),
    "count_words": (
        "How many words are in this line? {line}",
        "Count the words: {line}",
        "Number of words in \"{line}\"?",
        "Tell me how many words this line has: {line}",
        "Reckon the words in this line: {line}",
    ),
    "modernise": (
        "Modernise this line: {line}",
        "Rewrite in modern English (you, your): {line}",
        "Replace thou, thee and thy with modern words: {line}",
        "Say this the modern way: {line}",
        "Put this line into today's English: {line}",
    ),
    "arithmetic": (
        "What is {expr}?",
        "Compute {expr}.",
        "{expr} = ?",
        "Reckon me {expr}.",
        "Work out {expr} and give the number.",
    ),
    "continue": (
        "Continue this speech: {line}",
        "What comes next? {line}",
        "Go on with the speech: {line}",
        "Give the next line after: {line}",
        "Carry on from here: {line}",
    ),
}
VERIFIABLE_TASKS = tuple(t for t in TASKS if t != "continue")
N_SEEN_PHRASINGS = 4  # phrasings 0-3 train; 4 is held out

# ---- more seen phrasings, for the paraphrase-augmentation ablation (chapter 11) ---------------
# FLAN's fix for a model that learned the templates: many more phrasings per task. These eight
# per task are train-only extras (`build_sft_dataset(extra_phrasings=...)`); none repeats the
# held-out phrasing's distinctive wording, which stays unseen. Their `phrasing` index counts on
# from the held-out one: index 5 is EXTRA_PHRASINGS[task][0] (`phrasing_template`).
EXTRA_PHRASINGS: dict[str, tuple[str, ...]] = {
    "speaker": (
        "Whose words are these: \"{line}\"?\n{text}",
        "{text}\nWho said \"{line}\"?",
        "Identify the character who speaks \"{line}\".\n{text}",
        "Here is a scene.\n{text}\nWhich speaker has the line \"{line}\"?",
        "Tell me the name of whoever says \"{line}\".\n{text}",
        "{text}\nThe line \"{line}\" belongs to which character?",
        "Find who utters \"{line}\" in this passage.\n{text}",
        "Speaker of \"{line}\"?\n{text}",
    ),
    "upper": (
        "Make this line all caps: {line}",
        "Capitalise this line: {line}",
        "Rewrite in upper case: {line}",
        "Write this out in block letters: {line}",
        "UPPERCASE this: {line}",
        "Turn this line into capital letters, please: {line}",
        "Give me this line in uppercase: {line}",
        "{line}\nWrite the line above in capital letters.",
    ),
    "reverse_words": (
        "Reverse the words of this line: {line}",
        "Put the words in backwards order: {line}",
        "Read this line backwards, one word at a time: {line}",
        "Flip the word order: {line}",
        "Give the words of this line in reverse: {line}",
        "Write this line with its words reversed: {line}",
        "{line}\nNow say those words in reverse order.",
        "Word order reversed, please: {line}",
    ),
    "count_words": (
        "Count how many words this line has: {line}",
        "What is the word count of this line? {line}",
        "How many words does this contain? {line}",
        "{line}\nHow many words was that?",
        "Give the number of words: {line}",
        "Word count: {line}",
        "Tally the words in: {line}",
        "How long is this line in words? {line}",
    ),
    "modernise": (
        "Translate into modern English: {line}",
        "Update the old words in this line: {line}",
        "Write this line as we would say it now: {line}",
        "Modernize: {line}",
        "Replace the archaic words: {line}",
        "Make this line sound modern: {line}",
        "{line}\nRewrite that in modern words.",
        "Swap thou and thy for you and your: {line}",
    ),
    "arithmetic": (
        "Calculate {expr}.",
        "What does {expr} come to?",
        "Solve: {expr}",
        "{expr} equals what?",
        "Tell me the value of {expr}.",
        "Find {expr}.",
        "How much is {expr}?",
        "Evaluate {expr}.",
    ),
    "continue": (
        "What is the next line? {line}",
        "Continue: {line}",
        "Keep the speech going: {line}",
        "Write the line that follows: {line}",
        "Finish this speech: {line}",
        "Add the next line: {line}",
        "{line}\nWhat follows?",
        "Extend this speech by a line: {line}",
    ),
}


def phrasing_template(task: str, index: int) -> str:
    """The template of `SFTExample.phrasing` `index`: 0-4 are TASKS[task] (4 held out), 5 on
    are EXTRA_PHRASINGS[task]."""
    return (TASKS[task] + EXTRA_PHRASINGS[task])[index]


# the modern forms; whole words only, first-letter case kept ("Thou" -> "You")
MODERN = {"thou": "you", "thee": "you", "thy": "your", "thine": "your", "hast": "have",
          "dost": "do", "doth": "does"}
_MODERN_RE = re.compile(r"\b(" + "|".join(MODERN) + r")\b", re.IGNORECASE)
_SPEAKER_RE = re.compile(r"^([A-Z][A-Z'\- ]{1,24}[A-Z])\.$")  # "FIRST WITCH." on its own line


@dataclass(frozen=True)
class SFTExample:
    """One instruction example. `prompt` is the whole instruction (phrasing filled in)."""

    task: str
    prompt: str
    response: str
    split: str           # "train", "validation" or "test"
    play: str            # source play, or "arithmetic"
    phrasing: int        # index into TASKS[task] + EXTRA_PHRASINGS[task]
    heldout: bool        # phrasing is the held-out one (test split only)


@dataclass(frozen=True)
class Speech:
    play: str
    speaker: str
    lines: tuple[str, ...]


def modernise(line: str) -> str:
    """thou/thee -> you, thy/thine -> your, hast -> have, dost -> do, doth -> does."""
    def sub(m: re.Match) -> str:
        new = MODERN[m.group(1).lower()]
        return new.capitalize() if m.group(1)[0].isupper() else new
    return _MODERN_RE.sub(sub, line)


def play_texts(split: str) -> dict[str, str]:
    """The plays of one corpus split, by name, cut out of the split's file with the sizes in
    data/shakespeare/manifest.json (each play ends with a newline; a blank line follows)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is unknown; choose one of {SPLITS}")
    folder = data_dir() / "shakespeare"
    manifest = json.loads((folder / "manifest.json").read_text())
    raw = (folder / f"{split}.txt").read_bytes()
    plays, offset = {}, 0
    for name in manifest["splits"][split]["plays"]:
        size = manifest["plays"][name]["bytes"]
        plays[name] = raw[offset:offset + size].decode("utf-8")
        offset += size + 1
    if offset - 1 != len(raw):
        raise ValueError(f"data/shakespeare/{split}.txt ({len(raw)} bytes) does not match its "
                         "manifest; regenerate it with data/prepare_shakespeare.py")
    return plays


def speeches(play: str, text: str) -> Iterator[Speech]:
    """Speeches of a play: a speaker line ("BRUTUS.") and the verse lines after it, up to a
    blank line; stage directions in [brackets] are dropped."""
    speaker, lines = None, []
    for line in text.split("\n") + [""]:
        m = _SPEAKER_RE.match(line)
        if m:
            speaker, lines = m.group(1), []
        elif not line.strip():
            if speaker and lines:
                yield Speech(play, speaker, tuple(lines))
            speaker, lines = None, []
        elif speaker and not line.lstrip().startswith("["):
            lines.append(line.strip())


def _short(line: str, lo: int, hi: int) -> bool:
    return lo <= len(line) <= hi and line.isascii() and "[" not in line


def _inputs(task: str, play_speeches: list[Speech], rng: random.Random) -> list[dict]:
    """Every candidate input of `task` in one play (each dict fills the phrasing's fields and
    carries the response)."""
    out = []
    if task == "speaker":
        for a, b in zip(play_speeches, play_speeches[1:], strict=False):
            la, lb = a.lines[0], b.lines[0]
            if a.speaker != b.speaker and _short(la, 8, 40) and _short(lb, 8, 40) and la != lb:
                text = f"{a.speaker}. {la}\n{b.speaker}. {lb}"
                ask, who = (la, a.speaker) if rng.random() < 0.5 else (lb, b.speaker)
                out.append({"line": ask, "text": text, "response": who})
        return out
    for s in play_speeches:
        for i, line in enumerate(s.lines):
            words = line.split()
            if task == "upper" and _short(line, 8, 40) and line.upper() != line:
                out.append({"line": line, "response": line.upper()})
            elif task == "reverse_words" and _short(line, 8, 40) and 3 <= len(words) <= 6:
                out.append({"line": line, "response": " ".join(reversed(words))})
            elif task == "count_words" and _short(line, 4, 50) and 1 <= len(words) <= 9:
                out.append({"line": line, "response": str(len(words))})
            elif task == "modernise" and _short(line, 8, 50) and modernise(line) != line:
                out.append({"line": line, "response": modernise(line)})
            elif (task == "continue" and i == 0 and len(s.lines) > 1 and _short(line, 10, 50)
                  and _short(s.lines[1], 10, 50)):
                out.append({"line": line, "response": s.lines[1]})
    return out


def _arithmetic_split(a: int, op: str, b: int) -> str:
    h = int(hashlib.sha256(f"{a}{op}{b}".encode()).hexdigest(), 16) % 10
    return "test" if h == 0 else "validation" if h == 1 else "train"


def _arithmetic(split: str) -> list[dict]:
    out = []
    for a in range(21):
        for b in range(21):
            for op in "+-":
                if (op == "-" and b > a) or _arithmetic_split(a, op, b) != split:
                    continue
                out.append({"expr": f"{a} {op} {b}", "response": str(a + b if op == "+" else a - b)})
    return out


def build_sft_dataset(per_task: dict[str, int] | None = None, seed: int = 0,
                      extra_phrasings: int = 0) -> list[SFTExample]:
    """Make the instruction set.

    Args:
        per_task: examples per task and split, e.g. {"train": 1500, "validation": 100,
            "test": 100} (default). The test split gets each input twice: with a seen
            phrasing and with the held-out one. Arithmetic has only as many as its problems.
        seed: seeds the choice of lines and phrasings.
        extra_phrasings: paraphrase augmentation of the train split: its prompts draw from the
            four seen phrasings plus the first `extra_phrasings` of EXTRA_PHRASINGS[task]
            (0-8), by a second generator, so every split's inputs, and the validation and test
            splits whole, are those of `extra_phrasings=0`: only train's wording changes.

    Returns:
        The examples, train first, then validation, then test; within a split grouped by task.
    """
    per_task = per_task or {"train": 1500, "validation": 100, "test": 100}
    unknown = set(per_task) - set(SPLITS)
    if unknown:
        raise ValueError(f"per_task has unknown splits {sorted(unknown)}; use {SPLITS}")
    if not 0 <= extra_phrasings <= min(map(len, EXTRA_PHRASINGS.values())):
        raise ValueError(f"extra_phrasings={extra_phrasings}: choose 0 to "
                         f"{min(map(len, EXTRA_PHRASINGS.values()))} (EXTRA_PHRASINGS per task)")
    rng = random.Random(seed)
    wide = random.Random(seed + 1)  # train's augmented phrasings, apart from rng's inputs
    examples: list[SFTExample] = []
    for split in SPLITS:
        if split not in per_task:
            continue
        plays = {name: list(speeches(name, text)) for name, text in play_texts(split).items()}
        for task, phrasings in TASKS.items():
            if task == "arithmetic":
                pool = [(d, "arithmetic") for d in _arithmetic(split)]
            else:
                pool = [(d, name) for name, sp in plays.items() for d in _inputs(task, sp, rng)]
            seen_prompts: set[str] = set()
            unique = []
            for d, play in pool:  # one example per distinct input
                key = json.dumps(d, sort_keys=True)
                if key not in seen_prompts:
                    seen_prompts.add(key)
                    unique.append((d, play))
            rng.shuffle(unique)
            for d, play in unique[:per_task[split]]:
                fields = {k: v for k, v in d.items() if k != "response"}
                p = rng.randrange(N_SEEN_PHRASINGS)
                if split == "train" and extra_phrasings:  # 0-3 seen, 5 on the extras
                    p = wide.randrange(N_SEEN_PHRASINGS + extra_phrasings)
                    p = p if p < N_SEEN_PHRASINGS else len(phrasings) + p - N_SEEN_PHRASINGS
                examples.append(SFTExample(task, phrasing_template(task, p).format(**fields),
                                           d["response"], split, play, p, False))
                if split == "test":
                    examples.append(SFTExample(task, phrasings[-1].format(**fields),
                                               d["response"], split, play,
                                               len(phrasings) - 1, True))
    return examples


def write_sft_dataset(examples: list[SFTExample], folder: str | Path) -> dict[str, int]:
    """Write one JSON-lines file per split (`train.jsonl`, ...); returns the counts."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        rows = [json.dumps(asdict(e), ensure_ascii=False) for e in examples if e.split == split]
        if rows:
            (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
            counts[split] = len(rows)
    return counts


def load_sft(split: str = "train", folder: str | Path | None = None, task: str | None = None,
             heldout: bool | None = None) -> list[SFTExample]:
    """Read the shipped instruction set (data/sft/{split}.jsonl).

    Args:
        split: "train", "validation" or "test".
        folder: default `data_dir() / "sft"`.
        task: keep only this task.
        heldout: keep only held-out (True) or seen (False) phrasings; None keeps both.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is unknown; choose one of {SPLITS}")
    if task is not None and task not in TASKS:
        raise ValueError(f"task {task!r} is unknown; choose one of {tuple(TASKS)}")
    path = Path(folder or data_dir() / "sft") / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; regenerate it with "
                                "`python data/sft/make_sft_data.py`")
    rows = read_jsonl(path, SFTExample)
    return [e for e in rows if (task is None or e.task == task)
            and (heldout is None or e.heldout == heldout)]
