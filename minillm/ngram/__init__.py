"""Count-based n-gram language models (chapter 01): MLE, add-k, Jelinek-Mercer, stupid backoff,
(modified) Kneser-Ney.

Modules, lowest first: `text` (padding symbols, word/byte tokenizers), `discounts` (the
Kneser-Ney discounts as pure functions), `counts` (vectorised counting and Jelinek-Mercer's EM),
`model` (`NGramLM`, the smoothing recursion and its queries), `tuning` (add-k's k chosen on
held-out text).
"""

from minillm.ngram.discounts import absolute_discount, count_of_counts, kneser_ney_discounts
from minillm.ngram.model import SMOOTHINGS, NGramConfig, NGramLM
from minillm.ngram.text import (
    BOS,
    EOS,
    TOKENIZERS,
    UNK,
    ptb_sentences,
    tokenize_bytes,
    tokenize_words,
)
from minillm.ngram.tuning import tune_add_k

__all__ = ["BOS", "EOS", "NGramConfig", "NGramLM", "SMOOTHINGS", "TOKENIZERS", "UNK",
           "absolute_discount", "count_of_counts", "kneser_ney_discounts", "ptb_sentences",
           "tokenize_bytes", "tokenize_words", "tune_add_k"]
