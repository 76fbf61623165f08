"""Decoding: generate and stream, the generation config, the decoding state, logits
processors, beam search and speculative decoding.

    >>> from minillm.generation import generate
    >>> out = generate(model, ids, max_new_tokens=50, do_sample=True, top_p=0.9, generator=g)

Modules, lowest first: `processors` (temperature, top-k/p, min-p, typical, penalties),
`state` (`DecodeState`: tokens, padding mask, KV cache), `config` (`GenerationConfig`),
`beam_search`, `speculative`, and `generate` (`generate`, `stream`, contrastive search).
"""

from minillm.generation.beam_search import beam_search
from minillm.generation.config import GenerationConfig, eos_ids
from minillm.generation.generate import generate, sample_next, stream
from minillm.generation.processors import (
    LogitsProcessor,
    MinP,
    NoRepeatNGram,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    Typical,
    apply_processors,
    build_processors,
)
from minillm.generation.speculative import speculative_generate, verify_draft
from minillm.generation.state import DecodeState, draw, left_pad

__all__ = ["DecodeState", "GenerationConfig", "LogitsProcessor", "MinP", "NoRepeatNGram",
           "RepetitionPenalty", "Temperature", "TopK", "TopP", "Typical", "apply_processors",
           "beam_search", "build_processors", "draw", "eos_ids", "generate", "left_pad",
           "sample_next", "speculative_generate", "stream", "verify_draft"]
