"""Post-training: supervised fine-tuning (chat template, loss masking, packing) and, in later
chapters, reward models, PPO, GRPO and DPO (with IPO, KTO, SimPO, ORPO)."""

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
from minillm.alignment.mixing import MixedBatches, mixed_loss_fn
from minillm.alignment.pairs import (
    PairBatches,
    pair_batches,
    preference_loss_fn,
    reference_logps,
    sample_stats,
    tokenize_pair,
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

__all__ = ["CHAT_TOKENS", "ChatTemplate", "MixedBatches", "PairBatches", "PreferenceLoss",
           "SFTBatches", "add_special_tokens", "block_diagonal_mask", "decode_answers", "dpo_loss",
           "exact_match_by_task", "ipo_loss", "kto_loss", "mixed_loss_fn", "orpo_loss", "pack_batch",
           "pad_batch", "pair_batches", "plain_prompt", "preference_loss_fn", "reference_logps",
           "resize_token_embeddings", "sample_stats", "sequence_logps", "sft_loss_fn", "simpo_loss",
           "tokenize_example", "tokenize_pair"]
