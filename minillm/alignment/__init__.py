"""Post-training: supervised fine-tuning (chat template, loss masking, packing) and, in later
chapters, reward models, PPO, GRPO and DPO."""

from minillm.alignment.chat import (
    CHAT_TOKENS,
    ChatTemplate,
    add_special_tokens,
    resize_token_embeddings,
)
from minillm.alignment.mixing import MixedBatches, mixed_loss_fn
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

__all__ = ["CHAT_TOKENS", "ChatTemplate", "MixedBatches", "SFTBatches", "add_special_tokens",
           "block_diagonal_mask", "decode_answers", "exact_match_by_task", "mixed_loss_fn", "pack_batch",
           "pad_batch", "plain_prompt", "resize_token_embeddings", "sft_loss_fn",
           "tokenize_example"]
