"""The addition formats of chapter 20: right answers, the scratchpad's arithmetic, parsing."""

import random

import pytest
import torch

from minillm.data.arithmetic import (
    FORMATS,
    answer_of,
    completion,
    problems,
    prompt,
    scratchpad,
    training_batch,
)


def test_problems_have_the_digits_and_are_seeded():
    for d in (1, 2, 5):
        ps = problems(200, d, seed=3)
        assert all(len(str(a)) == d and len(str(b)) == d for a, b in ps)
    assert problems(50, 3, seed=1) == problems(50, 3, seed=1)
    assert problems(50, 3, seed=1) != problems(50, 3, seed=2)
    with pytest.raises(ValueError):
        problems(1, 0, seed=0)


def test_the_scratchpad_steps_add_up_to_the_answer():
    rng = random.Random(0)
    for _ in range(500):
        a, b = rng.randint(0, 10**6), rng.randint(0, 10**6)
        steps = scratchpad(a, b).rstrip(",").split(",")
        digits, carry = [], 0
        for i, step in enumerate(steps):
            lhs, s = step.split("=")
            x, y, c = map(int, lhs.split("+"))
            assert c == carry and x + y + c == int(s)
            assert x == (a // 10**i) % 10 and y == (b // 10**i) % 10
            digits.append(int(s) % 10)
            carry = int(s) // 10
        total = int("".join(map(str, reversed(digits)))) + carry * 10 ** len(digits)
        assert total == a + b


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_round_trips_its_answer(fmt):
    for a, b in problems(100, 4, seed=0) + [(0, 0), (9, 1), (99999, 1)]:
        assert prompt(a, b, fmt).startswith(FORMATS[fmt] + ":")
        assert answer_of(completion(a, b, fmt), fmt) == a + b


def test_answers_that_are_not_there_are_none():
    assert answer_of("12", "direct") is None                  # no newline: not finished
    assert answer_of("7+8+0=15,\n", "scratchpad") is None
    assert answer_of("<calc>1+2</calc>=<error: x>\n", "tool") is None
    with pytest.raises(ValueError):
        answer_of("1\n", "cot")
    with pytest.raises(ValueError):
        prompt(1, 2, "cot")


def test_training_batches_score_only_the_completion():
    x, y = training_batch(8, 3, seed=0)
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        text = bytes(t for t in row_x if t < 256).decode()
        head, _, _ = text.partition("=")
        asked = [t for t in row_y if t != -100]
        # the targets are the completion (after "=") and the closing <|endoftext|>
        assert asked[-1] == 256
        assert bytes(asked[:-1]).decode() == text[len(head) + 1:]
        assert text.endswith("\n")
    assert training_batch(4, 2, seed=5)[0].equal(training_batch(4, 2, seed=5)[0])


def test_the_shipped_model_solves_with_its_scratchpad_and_its_tool():
    # the chapter's claims in small: scratchpad beats direct at 3 digits, the tool beats the
    # model's own result; greedy decoding on the shipped checkpoint
    from minillm.data import data_dir
    from minillm.generation.arithmetic import solve_greedy, solve_with_tool
    from minillm.models import load_model

    torch.set_num_threads(1)
    model = load_model(data_dir() / "using" / "arithmetic")
    ps = problems(20, 3, seed=123)
    direct, pad = sum(solve_greedy(model, ps, "direct")), sum(solve_greedy(model, ps, "scratchpad"))
    with_tool, without = sum(solve_with_tool(model, ps)), sum(solve_with_tool(model, ps, False))
    assert pad >= direct + 10 and with_tool >= without + 4
