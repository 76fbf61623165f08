"""lm-eval's own command line with the minillm model registered:

    python -m minillm.evaluation.lm_eval_cli --model minillm --model_args checkpoint=shakespeare_sft \
        --tasks shakespeare_speaker_mc --limit 20

(or the console script `minillm-lm-eval ...` once the package is installed). It takes exactly
lm-eval's arguments (`lm_eval --help`; the `run`, `ls` and `validate` subcommands too).

Why a wrapper: lm-eval 0.4.13 finds models only in its own registry and has no plugin entry
point for a package to add one, so a plain `lm_eval --model minillm` does not know the name.
This module imports `minillm.evaluation.lm_eval_backend` (which registers "minillm") and then
hands the arguments to lm-eval's `cli_evaluate` unchanged, with two defaults added:

- `--include_path data/eval_tasks` (the course's tasks) when the command names none;
- HF_DATASETS_OFFLINE / HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE = 1 unless already set, so a run
  never reaches the network (the course's tasks read local JSON lines).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run lm-eval's CLI on `argv` (default: the process's arguments) with minillm registered."""
    from minillm.evaluation.run import OFFLINE_ENV, require_lm_eval, tasks_dir

    require_lm_eval()
    for name in OFFLINE_ENV:
        os.environ.setdefault(name, "1")
    from lm_eval.__main__ import cli_evaluate

    import minillm.evaluation.lm_eval_backend  # noqa: F401  (registers "minillm")

    args = list(sys.argv[1:] if argv is None else argv)
    def named(flag: str) -> bool:
        return any(a == flag or a.startswith(flag + "=") for a in args)

    finds_tasks = named("--tasks") or args[:1] in (["ls"], ["validate"])
    if finds_tasks and not named("--include_path") and not named("--help"):
        args += ["--include_path", str(tasks_dir())]
    saved = sys.argv
    sys.argv = ["lm_eval", *args]   # lm-eval's parser reads sys.argv
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
