"""`minillm eval`: a checkpoint through lm-evaluation-harness on the course's tasks.

    minillm eval --checkpoint shakespeare_sft --tasks shakespeare_speaker_mc,shakespeare_sft_exact

The course's tasks are lm-eval YAML tasks in data/eval_tasks (`tasks_dir()`), handed to lm-eval
as an include path, so any task lm-eval ships can be named beside them. Evaluation is offline:
HF_DATASETS_OFFLINE and HF_HUB_OFFLINE are set (the course's tasks read local JSON lines; a
task that needs a download fails with lm-eval's own error).

lm-eval is an optional dependency, imported when `run_eval` is called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EvalConfig", "format_results", "require_lm_eval", "run_eval", "tasks_dir"]

OFFLINE_ENV = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def tasks_dir() -> Path:
    """The folder of the course's lm-eval tasks (data/eval_tasks, or the wheel's copy)."""
    from minillm.data import data_dir

    return data_dir() / "eval_tasks"


def require_lm_eval() -> None:
    """Raise a clear ImportError when lm-evaluation-harness is not installed."""
    try:
        import lm_eval  # noqa: F401
    except ImportError as e:
        raise ImportError("minillm eval needs EleutherAI's lm-evaluation-harness: "
                          "pip install lm-eval (or pip install 'minillm[dev]')") from e


@dataclass
class EvalConfig:
    checkpoint: str                  # a model folder or a shipped checkpoint's name
    tasks: str                       # comma-separated lm-eval task names
    limit: int | None = None         # score only the first N documents of each task
    batch_size: int = 16             # rows per forward
    num_fewshot: int | None = None   # demonstrations per prompt (None: the task's default)
    device: str = "auto"             # "auto" = cuda > mps > cpu
    output_path: str | None = None   # write the results as JSON here
    include_path: str | None = None  # more task YAML folders (beside data/eval_tasks)

    def __post_init__(self) -> None:
        names = [t.strip() for t in self.tasks.split(",") if t.strip()]
        if not names:
            raise ValueError(f"tasks={self.tasks!r} names no task: pass e.g. "
                             "--tasks shakespeare_speaker_mc,shakespeare_sft_exact")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit} must be >= 1 (or unset: every document)")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ValueError(f"num_fewshot={self.num_fewshot} must be >= 0")

    @property
    def task_names(self) -> list[str]:
        return [t.strip() for t in self.tasks.split(",") if t.strip()]


def run_eval(config: EvalConfig, model=None, tokenizer=None) -> dict:
    """Evaluate a checkpoint (or a model object) on lm-eval tasks, offline.

    Args:
        config: what to evaluate and how.
        model, tokenizer: a loaded minillm model and its tokenizer instead of
            `config.checkpoint` (the chapter's way; `config.checkpoint` is then only a label).

    Returns:
        lm-eval's results dict ("results": per task metrics with their "_stderr").

    Raises:
        ImportError: lm-eval is not installed (naming `pip install lm-eval`).
        ValueError: a task lm-eval does not know (naming the known course tasks).
    """
    require_lm_eval()
    for name in OFFLINE_ENV:
        os.environ.setdefault(name, "1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from minillm.evaluation.lm_eval_backend import MiniLLMLM

    include = [str(tasks_dir())] + ([config.include_path] if config.include_path else [])
    # lm-eval's thousands of built-in task YAMLs are indexed only when a task is not ours
    manager = TaskManager(include_path=include, include_defaults=False)
    if not all(manager.match_tasks([t]) for t in config.task_names):
        manager = TaskManager(include_path=include)
    unknown = [t for t in config.task_names if not manager.match_tasks([t])]
    if unknown:
        ours = sorted(p.stem for p in tasks_dir().glob("*.yaml"))
        raise ValueError(f"lm-eval knows no task {unknown}: the course's are {ours} "
                         "(or name a task lm-eval ships, or pass --include-path)")
    if model is not None:
        lm = MiniLLMLM(model=model, tokenizer=tokenizer, batch_size=config.batch_size,
                       device=config.device)
    else:
        lm = MiniLLMLM(checkpoint=config.checkpoint, batch_size=config.batch_size,
                       device=config.device)
    results = simple_evaluate(model=lm, tasks=config.task_names, num_fewshot=config.num_fewshot,
                              limit=config.limit, task_manager=manager, log_samples=False,
                              bootstrap_iters=1000)  # means: closed-form stderr
    results = {"checkpoint": config.checkpoint, "results": results["results"],
               "n-samples": results.get("n-samples", {}), "configs": {
                   name: {"num_fewshot": cfg.get("num_fewshot"), "output_type":
                          cfg.get("output_type")} for name, cfg in results["configs"].items()}}
    if config.output_path:
        from minillm.io import atomic_write_json, json_safe

        atomic_write_json(Path(config.output_path), json_safe(results))
    return results


def format_results(results: dict) -> str:
    """One line per task and metric: value ± standard error."""
    lines = []
    for task, metrics in sorted(results["results"].items()):
        for key, value in metrics.items():
            if "," not in key or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric, _, filt = key.partition(",")
            err = metrics.get(f"{metric}_stderr,{filt}")
            spread = f" ± {err:.4f}" if isinstance(err, (int, float)) else ""
            lines.append(f"{task:32s} {metric:14s} {value:.4f}{spread}")
    return "\n".join(lines)
