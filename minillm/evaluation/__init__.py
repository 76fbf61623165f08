"""Evaluation (chapter 21): the lm-evaluation-harness backend, contamination, calibration.

The lm-eval backend (`minillm.evaluation.lm_eval_backend`) imports lm-eval, an optional
dependency, so it is not imported here: `minillm eval` and `run.run_eval` load it when called.
"""

from minillm.evaluation.calibration import (
    ReliabilityBin,
    abstention_curve,
    bootstrap_stderr,
    expected_calibration_error,
    mean_stderr,
    reliability_bins,
)
from minillm.evaluation.contamination import (
    contamination_rate,
    dirty_items,
    min_k_prob,
    ngrams,
    normalise,
    roc_auc,
)

__all__ = ["ReliabilityBin", "abstention_curve", "bootstrap_stderr", "contamination_rate",
           "dirty_items", "expected_calibration_error", "mean_stderr", "min_k_prob", "ngrams",
           "normalise", "reliability_bins", "roc_auc"]
