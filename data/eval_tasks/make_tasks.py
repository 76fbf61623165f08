"""Write the course's lm-eval tasks' data: JSON lines beside the task YAMLs of this folder.

    python data/eval_tasks/make_tasks.py [--check]

- `speaker_mc.jsonl` (task `shakespeare_speaker_mc`): the SFT test split's `speaker` items in
  their seen phrasings, as a two-way multiple choice: the passage of two speeches, the line
  asked about, and the two speakers' names (gold: the one who says it).
- `play_mc.jsonl` (task `shakespeare_play_mc`): speeches of the four held-out plays (validation:
  Macbeth, Much Ado About Nothing; test: Julius Caesar, Twelfth Night), 25 per play, as a
  four-way multiple choice of the play's title (the speech without its speaker, whose name would
  give some plays away).
- `sft_exact.jsonl` (task `shakespeare_sft_exact`): the SFT test split's verifiable items in
  their seen phrasings (prompt, response, task), scored by exact match of a greedy answer.

Deterministic (seed 0, `random.Random`); `--check` regenerates in memory and compares with the
files here (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

from minillm.data.sft import VERIFIABLE_TASKS, load_sft, play_texts, speeches

HERE = Path(__file__).resolve().parent
PLAYS = {"macbeth": "Macbeth", "much_ado_about_nothing": "Much Ado About Nothing",
         "julius_caesar": "Julius Caesar", "twelfth_night": "Twelfth Night"}
PER_PLAY = 25
SEED = 0
_SPEECH_LINE = re.compile(r"^([A-Z][A-Z' -]*[A-Z])\. (.+)$")


def speaker_items() -> list[dict]:
    """The two-way speaker choice from the SFT test split (seen phrasings)."""
    items = []
    for e in load_sft("test", task="speaker", heldout=False):
        lines = [m.groups() for m in map(_SPEECH_LINE.match, e.prompt.split("\n")) if m]
        names = [name for name, _ in lines]
        asked = [text for name, text in lines if name == e.response]
        if len(lines) != 2 or e.response not in names or len(set(names)) != 2:
            raise ValueError(f"speaker item {e.prompt!r} is not two speeches by two speakers")
        items.append({"passage": "\n".join(f"{n}. {t}" for n, t in lines), "line": asked[0],
                      "choices": names, "gold": names.index(e.response), "play": e.play})
    return items


def play_items() -> list[dict]:
    """Four-way play choice: speeches of 2-4 lines and 60-240 characters from each play."""
    rng = random.Random(SEED)
    texts = play_texts("validation") | play_texts("test")
    titles = list(PLAYS.values())
    items = []
    for play, title in PLAYS.items():
        pool = [s for s in speeches(play, texts[play])
                if 2 <= len(s.lines) <= 4 and 60 <= len(" ".join(s.lines)) <= 240]
        for s in rng.sample(pool, PER_PLAY):
            items.append({"speech": "\n".join(s.lines), "choices": titles,
                          "gold": titles.index(title), "play": play})
    return items


def exact_items() -> list[dict]:
    """The SFT test split's verifiable items, seen phrasings."""
    return [{"task": e.task, "prompt": e.prompt, "response": e.response, "play": e.play}
            for e in load_sft("test", heldout=False) if e.task in VERIFIABLE_TASKS]


def render(items: list[dict]) -> str:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)


FILES = {"speaker_mc.jsonl": speaker_items, "play_mc.jsonl": play_items,
         "sft_exact.jsonl": exact_items}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the files here instead of writing them")
    args = parser.parse_args(argv)
    stale = []
    for name, make in FILES.items():
        text = render(make())
        path = HERE / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path} ({text.count(chr(10))} items)")
    if stale:
        print(f"stale: {stale}; run python data/eval_tasks/make_tasks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
