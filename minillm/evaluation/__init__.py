"""Evaluation (chapter 21): the lm-evaluation-harness backend, contamination, calibration.

The lm-eval backend (`minillm.evaluation.lm_eval_backend`) imports lm-eval, an optional
dependency, so it is not imported here: `minillm eval` and `run_eval` load it when called.
"""

__all__: list[str] = []
