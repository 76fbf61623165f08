"""Decoding: generate and stream, the generation config, the decoding state, logits
processors, beam search and speculative decoding; using a model: tool calls, self-consistency
and few-shot prompts.

    >>> from minillm.generation import generate
    >>> out = generate(model, ids, max_new_tokens=50, do_sample=True, top_p=0.9, generator=g)

Modules, lowest first: `processors` (temperature, top-k/p, min-p, typical, penalties),
`state` (`DecodeState`: tokens, padding mask, KV cache), `config` (`GenerationConfig`),
`beam_search`, `speculative`, and `generate` (`generate`, `stream`, contrastive search).
Above them: `calculator` (a safe arithmetic evaluator) and `tools` (`generate_with_tools`: the
model's `<calc>...</calc>` calls answered and spliced in), `self_consistency` (majority vote
over sampled chains) and `prompting` (few-shot prompts).
"""

from minillm.generation.beam_search import beam_search
from minillm.generation.calculator import CalcError, CalculatorLimits, calculate, evaluate
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
from minillm.generation.prompting import (
    FewShotPrompt,
    exact_match,
    select_demonstrations,
    shuffle_labels,
)
from minillm.generation.self_consistency import (
    SelfConsistencyResult,
    majority_vote,
    self_consistency,
)
from minillm.generation.speculative import speculative_generate, verify_draft
from minillm.generation.state import DecodeState, draw, left_pad
from minillm.generation.tools import ToolCall, ToolOutput, ToolSpec, find_call, generate_with_tools

__all__ = ["CalcError", "CalculatorLimits", "DecodeState", "FewShotPrompt", "GenerationConfig",
           "LogitsProcessor", "MinP", "NoRepeatNGram", "RepetitionPenalty",
           "SelfConsistencyResult", "Temperature", "ToolCall", "ToolOutput", "ToolSpec", "TopK",
           "TopP", "Typical", "apply_processors", "beam_search", "build_processors", "calculate",
           "draw", "eos_ids", "evaluate", "exact_match", "find_call", "generate",
           "generate_with_tools", "left_pad", "majority_vote", "sample_next",
           "select_demonstrations", "self_consistency", "shuffle_labels", "speculative_generate",
           "stream", "verify_draft"]
