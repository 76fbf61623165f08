"""Corpora shipped under `data/`: loading a split as text, and where the files live.

Where the data is, first match wins:
1. `MINILLM_DATA=/path/to/data`, when set (e.g. a clone's data/ for an installed minillm);
2. `minillm/_data/` inside an installed wheel: the corpus, tokenizers, the base and SFT
   checkpoints, the SFT and preference sets (setup.py's DATA_FOLDERS);
3. the repository's `data/` next to the package (a clone, or an editable install), which also
   holds the course's shipped experiment results.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "load_corpus", "CORPORA", "SPLITS"]

CORPORA = ("shakespeare",)
SPLITS = ("train", "validation", "test")


DATA_ENV = "MINILLM_DATA"


def data_dir() -> Path:
    """The folder that holds the course's corpora and checkpoints (see the module docstring).

    Raises:
        FileNotFoundError: MINILLM_DATA names no folder, or there is no data at all.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        if not Path(env).is_dir():
            raise FileNotFoundError(f"{DATA_ENV}={env} is not a folder; point it at a data/ "
                                    f"folder (a clone's) or unset it to use the shipped data")
        return Path(env)
    package = Path(__file__).resolve().parents[1]
    for path in (package / "_data", package.parent / "data"):
        if path.is_dir():
            return path
    raise FileNotFoundError(f"minillm has no data: neither {package / '_data'} (a wheel's) nor "
                            f"{package.parent / 'data'} (a clone's) exists; reinstall minillm "
                            f"or set {DATA_ENV} to a clone's data/ folder")


def load_corpus(name: str = "shakespeare", split: str = "train") -> str:
    """Return one split of a shipped corpus as a string.

    Args:
        name: corpus name; one of `CORPORA`.
        split: "train", "validation" or "test" (split by play, see data/README.md).

    Raises:
        ValueError: unknown corpus or split.
        FileNotFoundError: the file is missing (run `python data/prepare_shakespeare.py`).
    """
    if name not in CORPORA:
        raise ValueError(f"corpus {name!r} is unknown; choose one of {CORPORA}")
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is unknown; choose one of {SPLITS}")
    path = data_dir() / name / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; regenerate it with `python data/prepare_{name}.py`"
        )
    return path.read_text(encoding="utf-8")
