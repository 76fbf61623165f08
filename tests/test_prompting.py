"""`minillm.generation.prompting`: few-shot prompts, demonstration selection, random labels."""

import random

import pytest

from minillm.generation.prompting import (
    FewShotPrompt,
    exact_match,
    select_demonstrations,
    shuffle_labels,
)

POOL = [(f"{a}+{b}", str(a + b)) for a in range(5) for b in range(4)]


def test_a_prompt_is_the_rendered_demonstrations_then_the_query_cut_before_the_answer():
    fmt = FewShotPrompt()
    prompt = fmt("7+8", [("1+1", "2"), ("2+3", "5")])
    assert prompt == "Q: 1+1\nA: 2\n\nQ: 2+3\nA: 5\n\nQ: 7+8\nA: "
    assert fmt("7+8") == "Q: 7+8\nA: "                           # zero-shot
    custom = FewShotPrompt("in={input} out={output};", separator=" ", instruction="Add.")
    assert custom("x", [("a", "b")]) == "Add. in=a out=b; in=x out="
    # an input holding a placeholder is text, not a placeholder
    assert FewShotPrompt()("{output}", [("{input}", "{output}")]) == \
        "Q: {input}\nA: {output}\n\nQ: {output}\nA: "


def test_a_callable_template_and_a_wrapper_are_used_as_given():
    def render(x, y):
        return f"<{x}>" if y is None else f"<{x}={y}>"

    fmt = FewShotPrompt(render, separator="|", wrap=lambda text: f"[user]{text}[assistant]")
    assert fmt("q", [("a", "1"), ("b", "2")]) == "[user]<a=1>|<b=2>|<q>[assistant]"


def test_selection_is_deterministic_by_seed_and_never_uses_the_query():
    a = select_demonstrations(POOL, 5, seed=3)
    assert a == select_demonstrations(POOL, 5, seed=3)
    assert a == random.Random(3).sample(POOL, 5)           # the documented draw
    assert a != select_demonstrations(POOL, 5, seed=4)
    assert len(set(a)) == 5 and set(a) <= set(POOL)
    query = POOL[0][0]
    for seed in range(20):
        assert all(x != query for x, _ in select_demonstrations(POOL, 19, seed, exclude=query))
    fmt = FewShotPrompt()
    built = fmt.build("9+9", POOL, 3, seed=1)
    assert built == fmt("9+9", select_demonstrations(POOL, 3, 1, exclude="9+9"))
    assert built.count("Q: ") == 4


def test_shuffled_labels_keep_inputs_and_draw_labels_from_the_space():
    demos = POOL[:12]
    labels = [str(i) for i in range(8)]
    random_demos = shuffle_labels(demos, labels, seed=0)
    assert [x for x, _ in random_demos] == [x for x, _ in demos]
    assert all(y in labels for _, y in random_demos)
    assert random_demos == shuffle_labels(demos, labels, seed=0)
    assert sum(y != d[1] for (_, y), d in zip(random_demos, demos, strict=True)) > 0


def test_exact_match_reads_the_first_line():
    assert exact_match(" 15\nQ: next", "15") and exact_match("15", 15)
    assert not exact_match("151", "15") and not exact_match("", "15")


@pytest.mark.parametrize("template, match", [
    ("Q: {input}", "{output} exactly once"), ("{output} {input}", "must come before"),
    ("{input}{input}{output}", "{input} exactly once"), (3, "format string or a callable")])
def test_bad_templates_raise(template, match):
    with pytest.raises(ValueError, match=match):
        FewShotPrompt(template)


def test_bad_selection_raises():
    with pytest.raises(ValueError, match="k=21"):
        select_demonstrations(POOL, 21, 0)
    with pytest.raises(ValueError, match=r"k=20 must be an integer in \[0, 19\]"):
        select_demonstrations(POOL, 20, 0, exclude=POOL[0][0])
    with pytest.raises(ValueError, match="labels is empty"):
        shuffle_labels(POOL, [], 0)
