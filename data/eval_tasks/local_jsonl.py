"""lm-eval's `custom_dataset` for this folder's tasks: a JSON-lines file found beside this
module, so the tasks load from any working directory (lm-eval hands `dataset_kwargs:
data_files:` to `datasets.load_dataset` as is, which reads a relative path from the current
directory). Nothing is downloaded."""

from pathlib import Path


def load(data_file: str, split: str = "test", **metadata):
    """A `datasets.DatasetDict` with one split holding the rows of `data_file` (a name in this
    folder); lm-eval passes its metadata as keywords too (ignored)."""
    import json

    import datasets

    path = Path(__file__).resolve().parent / data_file
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows)})
