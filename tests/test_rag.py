"""Chapter 20's RAG questions and likelihood scorer."""

import torch
import torch.nn.functional as F

from minillm.data.sft import Speech
from minillm.models import GPT, GPTConfig
from minillm.retrieval import BM25
from minillm.retrieval.rag import (
    candidate_logprobs,
    continue_questions,
    passage_text,
    speaker_questions,
)
from minillm.tokenizers import ByteTokenizer

NAMES = ["ROMEO", "JULIET", "NURSE", "TYBALT", "BENVOLIO", "MERCUTIO"]
SPEECHES = [Speech("romeo", NAMES[i % 6], (f"This is the line number {i + 10} spoken here",
                                           f"and then it goes on with words x{i}y"))
            for i in range(40)]


def test_questions_hold_the_right_answer_among_distinct_candidates():
    for make in (speaker_questions, continue_questions):
        qs = make(SPEECHES, 10, seed=0)
        assert qs == make(SPEECHES, 10, seed=0)
        for q in qs:
            s = SPEECHES[q.source]
            assert q.query == s.lines[0]
            assert len(set(zip(q.prefixes, q.texts, strict=True))) == 4
            if make is speaker_questions:
                assert q.prefixes[q.answer] == f"{s.speaker}.\n"
            else:
                assert q.texts[q.answer] == f"{s.lines[1]}\n"


def test_bm25_finds_the_source_passage_of_a_quoted_line():
    passages = [passage_text(s) for s in SPEECHES]
    bm = BM25(passages)
    for q in speaker_questions(SPEECHES, 10, seed=1):
        assert bm.search(q.query, 1)[0][0] == q.source


def test_candidate_logprobs_equal_scoring_each_row_alone():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, context_length=128, d_model=16, n_layer=1,
                          n_head=2)).eval()
    tok = ByteTokenizer()
    q = continue_questions(SPEECHES, 1, seed=2)[0]
    got = candidate_logprobs(model, tok, "some context\n", q)
    for p, t, g in zip(q.prefixes, q.texts, got, strict=True):
        ids = [tok.eot_id] + tok.encode("some context\n" + p + t)
        x = torch.tensor([ids])
        logp = F.log_softmax(model(x).logits[0], -1)
        n = len(tok.encode(t))
        want = sum(logp[len(ids) - n - 1 + j, ids[len(ids) - n + j]].item() for j in range(n))
        assert abs(g - want) < 1e-3
