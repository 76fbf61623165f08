"""Training: the loop (pluggable batches, loss and strategy), the optimizer and schedule
(re-exported from `minillm.optim`), checkpoints, evaluation and bits per byte."""

from minillm.optim import configure_optimizer, lr_at, param_groups
from minillm.training.checkpoint import latest_checkpoint, load_trainer_state
from minillm.training.evaluate import (
    bits_per_byte,
    estimate_loss,
    evaluate_loss,
    lm_nll_bits,
    text_bits_per_byte,
)
from minillm.training.interrupt import TrainingInterrupted
from minillm.training.tracked import moe_stats, tracked_fit
from minillm.training.trainer import LossFn, TrainConfig, Trainer, TrainingDiverged, lm_loss_fn

__all__ = ["LossFn", "TrainConfig", "Trainer", "TrainingDiverged", "TrainingInterrupted",
           "bits_per_byte",
           "configure_optimizer", "estimate_loss", "evaluate_loss", "latest_checkpoint",
           "lm_loss_fn", "lm_nll_bits", "load_trainer_state", "lr_at", "moe_stats",
           "param_groups", "text_bits_per_byte", "tracked_fit"]
