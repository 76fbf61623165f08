"""Post-training: supervised fine-tuning (chat template, loss masking, packing), reward models,
PPO, GRPO and REINFORCE/RLOO (rollouts, KL penalty, clipped losses), DPO with its relatives (IPO, KTO, SimPO,
ORPO), and knowledge distillation (soft targets, reverse KL, generalized JSD, sequence-level,
feature).

The entry points are exported here; everything else is imported from its module
(e.g. `minillm.alignment.chat`).
"""

from minillm.alignment.chat import ChatTemplate
from minillm.alignment.distill import (
    FeatureDistillStudent,
    distill_loss_fn,
    forward_kl,
    generalized_jsd,
    hidden_mse,
    kd_loss,
    reverse_kl,
    teacher_sequences,
)
from minillm.alignment.distill_run import DistillConfig
from minillm.alignment.dpo import dpo_loss, hinge_loss, ipo_loss, kto_loss, orpo_loss, simpo_loss
from minillm.alignment.dpo_run import DPOConfig
from minillm.alignment.grpo import GRPOConfig, GRPOTrainer, grpo_loss
from minillm.alignment.mixing import MixedBatches, mixed_loss_fn
from minillm.alignment.pairs import PairBatches, preference_loss_fn
from minillm.alignment.ppo_trainer import PPOConfig, PPOTrainer
from minillm.alignment.reinforce import ReinforceConfig, ReinforceTrainer
from minillm.alignment.reward import (
    PreferenceBatches,
    RewardModel,
    bradley_terry_loss,
    reward_loss_fn,
)
from minillm.alignment.sft import SFTBatches, sft_loss_fn

__all__ = ["bradley_terry_loss", "ChatTemplate", "distill_loss_fn", "DistillConfig", "dpo_loss", "hinge_loss",
           "DPOConfig", "FeatureDistillStudent", "forward_kl", "generalized_jsd", "grpo_loss",
           "GRPOConfig", "GRPOTrainer", "hidden_mse", "ipo_loss", "kd_loss", "kto_loss",
           "mixed_loss_fn", "MixedBatches", "orpo_loss", "PairBatches", "PPOConfig", "PPOTrainer",
           "preference_loss_fn", "PreferenceBatches", "ReinforceConfig", "ReinforceTrainer",
           "reverse_kl", "reward_loss_fn", "RewardModel", "sft_loss_fn", "SFTBatches", "simpo_loss", "teacher_sequences"]
