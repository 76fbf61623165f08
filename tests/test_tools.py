"""The safe calculator (`minillm.generation.calculator`) and the tool-calling decode loop
(`minillm.generation.tools`)."""

import math
import signal
from dataclasses import dataclass
from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from minillm.generation import generate
from minillm.generation.calculator import (
    CalcError,
    CalculatorLimits,
    calculate,
    evaluate,
    format_number,
)
from minillm.generation.tools import ToolSpec, find_call, generate_with_tools
from minillm.models import GPT, GPTConfig
from minillm.models.base import LMOutput
from minillm.tokenizers import ByteTokenizer

# ---- the calculator: values ----------------------------------------------------------------


@pytest.mark.parametrize("expression", [
    "12*(3+4)", "1+2*3", "(1+2)*3", "2**10", "2**3**2", "-2**2", "(-2)**2", "2**-2", "7//2",
    "-7//2", "7%3", "-7%3", "7/2", "1/3+1/6", "0.1+0.2", " 3 - - 4 ", "+5", "--5", "10/4*2",
    "100-3-2", "2*-3", ".5+7.", "3**0", "(((4)))"])
def test_values_equal_exact_python_arithmetic(expression):
    # the reference: Python's own arithmetic on Fractions of the same literals (the test writes
    # the numbers as Fraction(...) itself; the calculator never sees Python)
    import re
    as_fractions = re.sub(r"(\d+\.?\d*|\.\d+)", r"Fraction('\1')", expression)
    expected = eval(as_fractions, {"Fraction": Fraction})  # noqa: S307 - the test's own text
    assert evaluate(expression) == expected


@given(st.recursive(
    st.integers(0, 50).map(str),
    lambda inner: st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map(
        lambda t: f"({t[0]}{t[1]}{t[2]})"),
    max_leaves=12))
def test_integer_expressions_match_python_ints(expression):
    assert evaluate(expression) == eval(expression)  # noqa: S307 - generated digits and +-*()


def test_results_are_formatted_as_integers_or_rounded_decimals():
    assert calculate("12*7") == "84"
    assert calculate("1/3") == "0.333333"
    assert calculate("-1/3") == "-0.333333"
    assert calculate("5/2") == "2.5"
    assert calculate("2/3", CalculatorLimits(max_decimals=2)) == "0.67"
    assert calculate("-1/1000000000") == "0"    # rounds to zero: no "-0"
    assert format_number(Fraction(-7, 4)) == "-1.75"
    assert format_number(Fraction(1, 3), max_decimals=0) == "0"
    # decimals round half to even, exactly (no float detour)
    assert format_number(Fraction(25, 1000), max_decimals=2) == "0.02"
    assert format_number(Fraction(35, 1000), max_decimals=2) == "0.04"


# ---- the calculator: hostile input ----------------------------------------------------------


class _Timeout(Exception):
    pass


@pytest.fixture
def deadline():
    """A hang guard, not a timing check: fail instead of hanging the suite if a hostile
    expression is ever evaluated (9**9**9 would run for hours) rather than refused."""
    def _raise(*_):
        raise _Timeout("the calculator did not return within 120 s: it evaluated a hostile "
                       "expression instead of refusing it")
    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("expression, reason", [
    ("9**9**9", "exponent too large"),
    ("2**100000", "exponent too large"),
    ("10**300", "result too large"),
    ("(10**100)*(10**100)", "result too large"),
    ("99999999999**999", "result too large"),
    ("1/0", "division by zero"),
    ("5//(3-3)", "division by zero"),
    ("5%0.0", "division by zero"),
    ("0**-1", "division by zero"),
    ("(" * 90 + "1" + ")" * 90, "nested too deeply"),
    ("-" * 100 + "1", "nested too deeply"),
    ("2**" * 60 + "2", "nested too deeply"),
    ("1+" * 5000 + "1", "expression too long"),
    ("abc", "unexpected character 'a'"),
    ("__import__('os').system('true')", "unexpected character '_'"),
    ("1e9", "unexpected character 'e'"),
    ("1_000", "unexpected character '_'"),
    ("٣+1", "unexpected character '٣'"),     # an Arabic-Indic digit: Python's int accepts it
    ("１+1", "unexpected character '１'"),    # a full-width digit
    ("2**0.5", "non-integer exponent"),
    ("", "empty expression"),
    ("   ", "empty expression"),
    ("(1+2", "unexpected end of expression"),
    ("1+2)", "unexpected ')'"),
    ("1 2", "unexpected '2'"),
    ("*3", "unexpected '*'"),
    ("3.5.5", "unexpected '.5'"),
])
def test_hostile_expressions_get_a_clear_error_and_no_exception(expression, reason, deadline):
    assert calculate(expression) == f"<error: {reason}>"
    with pytest.raises(CalcError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        evaluate(expression)
    assert issubclass(CalcError, ValueError)


def test_the_limits_are_exactly_where_they_say(deadline):
    limits = CalculatorLimits(max_length=10, max_depth=3, max_exponent=5, max_bits=16)
    assert calculate("1" * 10, CalculatorLimits(max_bits=64)) == "1111111111"
    assert calculate("1" * 11, limits) == "<error: expression too long>"
    assert calculate("(((1)))", limits) == "1"
    assert calculate("((((1))))", limits) == "<error: nested too deeply>"
    assert calculate("3**5", limits) == "243"
    assert calculate("2**6", limits) == "<error: exponent too large>"
    assert calculate("255*257", limits) == "65535"                 # 16 bits
    assert calculate("256*256", limits) == "<error: result too large>"
    assert calculate("1/65535", limits) == "0.000015"
    assert calculate("1/65536", limits) == "<error: result too large>"   # the denominator


@pytest.mark.parametrize("field, value", [("max_length", 0), ("max_depth", -1),
                                          ("max_bits", 1.5), ("max_decimals", -1)])
def test_bad_limits_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"{field}={value}"):
        CalculatorLimits(**{field: value})


@given(st.text(max_size=60))
def test_any_text_gives_a_string_never_an_exception(text):
    out = calculate(text)
    assert isinstance(out, str) and out


@given(st.text(alphabet="0123456789+-*/%().  ", max_size=80))
def test_arithmetic_soup_gives_a_value_or_an_error(text):
    out = calculate(text)
    if not out.startswith("<error: "):
        value = evaluate(text)
        assert math.isclose(float(out), float(value), rel_tol=1e-5, abs_tol=1e-6)


# ---- finding calls ------------------------------------------------------------------------


def test_find_call_reads_the_expression_of_a_finished_call():
    assert find_call("so <calc>2+3</calc>") == ("2+3", True)
    assert find_call("<calc>2+3</cal") == (None, False)
    assert find_call("a stray </calc>") == (None, True)
    assert find_call("<calc>1<calc>2*2</calc>") == ("2*2", True)
    spec = ToolSpec("[[", "]]", " -> {}")
    assert find_call("x [[7*6]]", spec) == ("7*6", True)
    with pytest.raises(ValueError, match="result_format"):
        ToolSpec(result_format="=")
    with pytest.raises(ValueError, match="open_tag"):
        ToolSpec(open_tag="", close_tag="x")


# ---- the decode loop with a scripted model ---------------------------------------------------


@dataclass
class _StubConfig:
    vocab_size: int
    context_length: int = 512


class ScriptedLM(nn.Module):
    """A language model that, at its n-th forward, predicts script[n] at every position: it
    writes a fixed script whatever it is shown (so what it reads after a call is the tool's)."""

    def __init__(self, script: list[int], vocab_size: int):
        super().__init__()
        self.config = _StubConfig(vocab_size)
        self.script = script
        self.calls = 0
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, idx, targets=None, **kwargs):
        token = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        logits = torch.full((*idx.shape, self.config.vocab_size), -10.0)
        logits[..., token] = 10.0
        return LMOutput(logits)


def test_scripted_calls_are_answered_and_spliced_with_the_byte_tokenizer():
    tok = ByteTokenizer()
    parts = ["x <calc>12*7</calc>", " y <calc>9**9**9</calc>", " a stray </calc>",
             " z <calc>1/3</calc>", " done"]
    script = tok.encode("".join(parts)) + [tok.eot_id]
    model = ScriptedLM(script, tok.vocab_size)
    prompt = torch.tensor([tok.encode("Q: ")])
    out = generate_with_tools(model, prompt, tok, 200, do_sample=False,
                              eos_token_id=tok.eot_id)
    answers = [calculate("12*7"), calculate("9**9**9"), calculate("1/3")]
    assert answers == ["84", "<error: exponent too large>", "0.333333"]
    expected = ("Q: " + parts[0] + "=" + answers[0] + parts[1] + "=" + answers[1] + parts[2]
                + parts[3] + "=" + answers[2] + parts[4] + "<|endoftext|>")
    assert tok.decode(out.ids[0].tolist()) == expected
    assert [c.expression for c in out.calls] == ["12*7", "9**9**9", "1/3"]
    assert [c.result for c in out.calls] == answers
    first = out.calls[0].position
    assert tok.decode(out.ids[0, first:first + 3].tolist()) == "=84"


def test_tags_as_special_tokens_work_the_same():
    tok = ByteTokenizer(special_tokens=("<|endoftext|>", "<calc>", "</calc>"))
    text = "a <calc>6*7</calc> b <calc>2**-3</calc> c"
    script = tok.encode(text, allowed_special="all") + [tok.eot_id]
    assert tok.special_tokens["</calc>"] in script and len(script) < len(text)  # one id a tag
    out = generate_with_tools(ScriptedLM(script, tok.vocab_size), torch.tensor([[65]]), tok,
                              100, do_sample=False, eos_token_id=tok.eot_id)
    assert tok.decode(out.ids[0].tolist()) == \
        "Aa <calc>6*7</calc>=42 b <calc>2**-3</calc>=0.125 c<|endoftext|>"


def test_a_failing_tool_and_too_many_calls_become_error_text():
    tok = ByteTokenizer()
    script = tok.encode("<calc>1</calc><calc>2</calc><calc>3</calc>.") + [tok.eot_id]

    def tool(expression):
        if expression == "2":
            raise KeyError(expression)
        return "ok"

    out = generate_with_tools(ScriptedLM(script, tok.vocab_size), torch.tensor([[65]]), tok,
                              200, do_sample=False, eos_token_id=tok.eot_id, tool=tool,
                              max_calls=2)
    assert tok.decode(out.ids[0].tolist()) == (
        "A<calc>1</calc>=ok<calc>2</calc>=<error: tool failed (KeyError)>"
        "<calc>3</calc>=<error: too many tool calls>.<|endoftext|>")


def test_max_new_tokens_counts_the_splice_too():
    tok = ByteTokenizer()
    script = tok.encode("<calc>2**64</calc> more text")
    model = ScriptedLM(script, tok.vocab_size)
    n_call = len(tok.encode("<calc>2**64</calc>"))
    out = generate_with_tools(model, torch.tensor([[65]]), tok, n_call + 5, do_sample=False)
    assert out.ids.shape == (1, 1 + n_call + 5)
    assert tok.decode(out.ids[0].tolist()) == "A<calc>2**64</calc>=1844"


def test_bad_arguments_raise(tiny_model):
    tok = ByteTokenizer()
    with pytest.raises(ValueError, match="one prompt"):
        generate_with_tools(tiny_model, torch.zeros(2, 3, dtype=torch.long), tok, 4)
    with pytest.raises(ValueError, match="num_beams"):
        generate_with_tools(tiny_model, torch.zeros(1, 3, dtype=torch.long), tok, 4,
                            num_beams=2)
    with pytest.raises(ValueError, match="max_calls"):
        generate_with_tools(tiny_model, torch.zeros(1, 3, dtype=torch.long), tok, 4,
                            max_calls=-1)


# ---- the decode loop on a real GPT: output = decoding with the answer pasted in ---------------


class SteeredGPT(GPT):
    """A tiny random GPT that is made to write `script` from absolute position `at` on (a
    large logit bonus), and is itself everywhere else: after the call it decodes with its own
    weights, reading the spliced answer through its KV cache."""

    def __init__(self, config, script, at):
        super().__init__(config)
        self.script, self.at = script, at
        self.fed: list[int] = []     # tokens per forward

    def forward(self, idx, targets=None, *, cache=None, **kwargs):
        self.fed.append(idx.size(1))
        past = cache.length if cache is not None else 0
        out = super().forward(idx, targets, cache=cache, **kwargs)
        for t in range(idx.size(1)):
            pos = past + t + 1 - self.at      # the position this logit predicts, in the script
            if 0 <= pos < len(self.script):
                out.logits[:, t, self.script[pos]] += 1e4
        return out


def _pasted_reference(model, prompt, tok, n_new, call_text, result, **kw):
    """Plain `generate` up to the end of the call, the answer pasted in, plain `generate` on."""
    n_call = len(tok.encode(call_text))
    first = generate(model, prompt, n_call, **kw)
    assert tok.decode(first[0, prompt.size(1):].tolist()) == call_text
    pasted = torch.cat([first, torch.tensor([tok.encode("=" + result)])], dim=1)
    return generate(model, pasted, prompt.size(1) + n_new - pasted.size(1), **kw)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("sampling", [False, True])
def test_tool_loop_equals_decoding_with_the_result_pasted_in(use_cache, sampling, one_thread):
    tok = ByteTokenizer()
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tok.vocab_size, context_length=64, d_model=32, n_layer=2,
                       n_head=4)
    call = "<calc>123*456</calc>"
    prompt = torch.tensor([tok.encode("Q: 123*456? A: ")])
    model = SteeredGPT(config, tok.encode(call), at=prompt.size(1) + 2).eval()
    kw = dict(do_sample=sampling, temperature=0.8 if sampling else 0.0, top_k=20 if sampling
              else None, use_cache=use_cache)
    n_new = 40
    out = generate_with_tools(model, prompt, tok, n_new, generator=torch.Generator()
                              .manual_seed(3), **kw)
    assert [(c.expression, c.result) for c in out.calls] == [("123*456", "56088")]
    if use_cache:   # every token goes through the model once: the prompt, then one token a
        # step, and the call's last token with the answer as one block (nothing is re-encoded)
        assert sum(model.fed) == out.ids.size(1) - 1
        assert model.fed[0] == prompt.size(1) and 1 + len("=56088") in model.fed
    def pasted(result):
        # two tokens of the model's own, then the call, the answer pasted in, the model again
        g = torch.Generator().manual_seed(3)
        head = generate(model, prompt, 2, generator=g, **kw)
        return _pasted_reference(model, head, tok, n_new - 2, call, result, generator=g, **kw)

    reference = pasted("56088")
    assert out.ids.shape == reference.shape == (1, prompt.size(1) + n_new)
    assert torch.equal(out.ids, reference)
    # the continuation is the model's own and depends on the answer: a different answer pasted
    # in changes what follows (so the test would notice a splice that went missing)
    other = pasted("99999")
    n_keep = out.calls[0].position + len("=56088")
    assert not torch.equal(other[:, n_keep:], reference[:, n_keep:])
