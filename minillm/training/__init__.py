"""Training: the loop, its optimizer and schedule, checkpoints, evaluation."""

from minillm.training.checkpoint import latest_checkpoint, load_trainer_state
from minillm.training.evaluate import bits_per_byte, estimate_loss, evaluate_loss
from minillm.training.optim import configure_optimizer, lr_at, param_groups
from minillm.training.trainer import TrainConfig, Trainer

__all__ = ["TrainConfig", "Trainer", "bits_per_byte", "configure_optimizer", "estimate_loss",
           "evaluate_loss", "latest_checkpoint", "load_trainer_state", "lr_at", "param_groups"]
