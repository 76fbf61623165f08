"""minillm.evaluation.judge (agreement, position and length bias of a judge) and
minillm.evaluation.qa (answers with a confidence; closed-book, open-book and retrieval prompts)."""

from __future__ import annotations

import math

import pytest
import torch

from minillm.evaluation.judge import judge_report, pairwise_prompt, share_with_stderr


def test_share_with_stderr_is_lm_evals_for_a_mean_of_flags():
    lm_metrics = pytest.importorskip("lm_eval.api.metrics")
    flags = [True, False, True, True, False, True, True]
    p, se = share_with_stderr(flags)
    assert p == pytest.approx(5 / 7)
    assert se == pytest.approx(lm_metrics.mean_stderr([float(f) for f in flags]))
    with pytest.raises(ValueError):
        share_with_stderr([True])


def test_judge_report_on_a_hand_made_case():
    gold_a = [1.0, 1.0, 0.0, 0.0, 2.0, 5.0]
    gold_b = [0.0, 0.0, 1.0, 1.0, 2.0, 1.0]       # pair 4 is a gold tie: left out
    len_a = [5, 3, 3, 9, 1, 4]
    len_b = [3, 5, 5, 2, 1, 4]                     # pair 5 has equal lengths
    first = [True, True, True, False, True, True]  # a wins, as shown first
    swapped = [True, True, True, True, False, False]   # b shown first: True = b wins
    rep = judge_report(first, swapped, gold_a, gold_b, len_a, len_b)
    assert rep["pairs"] == 5
    assert rep["agreement"][0] == pytest.approx(4 / 5)      # pair 2: a chosen, gold says b
    # swapped: a wins when not swapped -> F, F, F, F, T over kept pairs 0,1,2,3,5
    assert rep["agreement_swapped"][0] == pytest.approx(3 / 5)
    # consistent: first != swapped -> F, F, F, T, T
    assert rep["consistency"][0] == pytest.approx(2 / 5)
    # inconsistent pairs 0, 1, 2: the first position won in all three
    assert rep["inconsistent_to_first"][0] == pytest.approx(1.0)
    # length: pairs 0-3 (5 equal): a longer in 0 and 3; judge picked a in 0,1,2 and b in 3
    assert rep["judge_picks_longer"][0] == pytest.approx(1 / 4)   # only pair 0
    assert rep["gold_picks_longer"][0] == pytest.approx(2 / 4)    # pairs 0 and 2
    pointwise = judge_report(first, None, gold_a, gold_b, len_a, len_b)
    assert "consistency" not in pointwise
    assert pointwise["agreement"] == rep["agreement"]


def test_pairwise_prompt_holds_both_answers_in_order():
    q = pairwise_prompt("Continue: O", "sweet love", "bloody death")
    assert q.index("Answer 1: sweet love") < q.index("Answer 2: bloody death")


def test_answers_with_confidence_is_the_probability_of_answer_then_stop():
    pytest.importorskip("lm_eval")
    from minillm.evaluation.lm_eval_backend import MiniLLMLM
    from minillm.evaluation.qa import SpeechIndex, answers_with_confidence, speaker_prompt
    from minillm.models import GPT, GPTConfig
    from minillm.tokenizers import ByteTokenizer

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, context_length=128, d_model=32, n_layer=2, n_head=2,
                          init_std=0.3)).eval()
    tok = ByteTokenizer()
    lm = MiniLLMLM(model=model, tokenizer=tok, batch_size=4, device="cpu")
    prompts = ["Who?", "Name the speaker"]
    out = answers_with_confidence(lm, prompts, stop="\n", max_gen_toks=5, template="{prompt}:")
    for prompt, (answer, conf) in zip(prompts, out, strict=True):
        ids = tok.encode(prompt + ":")
        target = tok.encode(answer + "\n")
        # the answer's raw text before strip: greedy decoding from the prompt
        x = torch.tensor([ids + target[:-1]])
        logp = torch.log_softmax(model(x).logits[0].double(), -1)
        direct = sum(logp[len(ids) - 1 + i, t].item() for i, t in enumerate(target))
        if answer == answer.strip():
            assert conf == pytest.approx(math.exp(direct), rel=1e-4)
        assert 0 <= conf <= 1
    index = SpeechIndex(["BRUTUS. Peace, ho!", "CASSIUS. Will you go see the order",
                         "VIOLA. Sure, my noble lord,"])
    assert index.passage("my noble lord", 1) == "VIOLA. Sure, my noble lord,"
    assert speaker_prompt("Peace, ho!", None) == 'Name the speaker of "Peace, ho!".'
    assert speaker_prompt("Peace, ho!", "BRUTUS. Peace, ho!").endswith("\nBRUTUS. Peace, ho!")
