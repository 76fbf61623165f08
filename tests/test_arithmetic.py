"""The addition formats of chapter 20: right answers, the scratchpad's arithmetic, parsing."""

import random

import pytest

from minillm.data.arithmetic import FORMATS, answer_of, completion, problems, prompt, scratchpad


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
