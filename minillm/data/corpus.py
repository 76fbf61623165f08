"""Corpora shipped under `data/`: loading a split as text, and where the files live.

The repository's `data/` folder is found next to the package (an editable install or a
clone); set `MINILLM_DATA=/path/to/data` to point elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "load_corpus", "CORPORA", "SPLITS"]

CORPORA = ("shakespeare",)
SPLITS = ("train", "validation", "test")


def data_dir() -> Path:
    """The folder that holds the course's corpora and checkpoints."""
    env = os.environ.get("MINILLM_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "data"
    if not path.is_dir():
        raise FileNotFoundError(
            f"minillm's data folder {path} does not exist. Install minillm from a clone "
            "(`pip install -e .`) or set MINILLM_DATA to the repository's data/ folder."
        )
    return path


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
