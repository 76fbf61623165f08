"""Post-training: supervised fine-tuning (chat template, loss masking, packing), reward models,
PPO and GRPO (rollouts, KL penalty, clipped losses), and DPO with its relatives (IPO, KTO, SimPO,
ORPO)."""

from minillm.alignment.chat import (
    CHAT_TOKENS,
    ChatTemplate,
    add_special_tokens,
    resize_token_embeddings,
)
from minillm.alignment.dpo import (
    PreferenceLoss,
    dpo_loss,
    ipo_loss,
    kto_loss,
    orpo_loss,
    sequence_logps,
    simpo_loss,
)
from minillm.alignment.dpo_run import DPOConfig
from minillm.alignment.grpo import (
    GRPOConfig,
    GRPOTrainer,
    exact_match_rewards,
    group_advantages,
    grpo_loss,
)
from minillm.alignment.mixing import MixedBatches, mixed_loss_fn
from minillm.alignment.pairs import (
    PairBatches,
    pair_batches,
    preference_loss_fn,
    reference_logps,
    sample_stats,
    tokenize_pair,
)
from minillm.alignment.ppo import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    explained_variance,
    gae_advantages,
    kl_penalty,
    masked_mean,
    masked_var,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
    rewards_with_kl,
    token_logprobs,
)
from minillm.alignment.ppo_trainer import PPOConfig, PPOTrainer, ValueHead, reward_model_scorer
from minillm.alignment.reward import (
    PreferenceBatches,
    RewardModel,
    bradley_terry_loss,
    calibration_bins,
    encode_pairs,
    evaluate_reward_model,
    gold_agreement,
    pair_accuracy,
    reward_loss_fn,
    score_pairs,
)
from minillm.alignment.rollout import (
    Rollout,
    decode_responses,
    response_forward,
    response_mask,
    sample_rollout,
)
from minillm.alignment.sft import (
    SFTBatches,
    block_diagonal_mask,
    decode_answers,
    exact_match_by_task,
    pack_batch,
    pad_batch,
    plain_prompt,
    sft_loss_fn,
    tokenize_example,
)

__all__ = ["AdaptiveKLController", "CHAT_TOKENS", "ChatTemplate", "DPOConfig", "FixedKLController",
           "GRPOConfig", "GRPOTrainer", "MixedBatches", "PPOConfig", "PPOTrainer", "PairBatches",
           "PreferenceBatches", "PreferenceLoss", "RewardModel", "Rollout", "SFTBatches",
           "ValueHead", "add_special_tokens", "block_diagonal_mask", "bradley_terry_loss",
           "calibration_bins", "decode_answers", "decode_responses", "dpo_loss", "encode_pairs",
           "entropy_from_logits", "evaluate_reward_model", "exact_match_by_task",
           "exact_match_rewards", "explained_variance", "gae_advantages", "gold_agreement",
           "group_advantages", "grpo_loss", "ipo_loss", "kl_penalty", "kto_loss", "masked_mean",
           "masked_var", "masked_whiten", "mixed_loss_fn", "orpo_loss", "pack_batch", "pad_batch",
           "pair_accuracy", "pair_batches", "plain_prompt", "ppo_policy_loss", "ppo_value_loss",
           "preference_loss_fn", "reference_logps", "resize_token_embeddings", "response_forward",
           "response_mask", "reward_loss_fn", "reward_model_scorer", "rewards_with_kl",
           "sample_rollout", "sample_stats", "score_pairs", "sequence_logps", "sft_loss_fn",
           "simpo_loss", "token_logprobs", "tokenize_example", "tokenize_pair"]
