"""A safe calculator for tool calls: parse and evaluate `+ - * / // % **`, parentheses, unary
signs, integers and decimals, and nothing else.

A model that writes `<calc>12*(3+4)</calc>` hands this module a string it made up, so the
string is untrusted input: it is never given to Python's `eval` (which runs code) or
`ast.literal_eval`. A recursive-descent parser reads it instead, with one function per
precedence level (lowest first, as in Python):

    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/" | "//" | "%") unary)*
    unary  := ("+" | "-") unary | power
    power  := atom ("**" unary)?          # right-associative: 2**3**2 = 2**9; -2**2 = -4
    atom   := number | "(" expr ")"
    number := ASCII digits with an optional decimal point ("12", "3.5", ".5", "7.")

Arithmetic is exact (`fractions.Fraction`): 0.1 + 0.2 is 3/10, and `/` never rounds. `//`
and `%` floor, as in Python. A result is written as an integer when it is one, else as a
decimal rounded to `max_decimals` places (trailing zeros dropped): 1/3 -> "0.333333".

Hard limits, so a hostile expression gets an error and never a hang or a crash of decoding:
its length (`max_length` characters), nesting depth (`max_depth` parentheses and signs),
exponents (integers only, |e| <= `max_exponent`), and the size of every intermediate value
(numerator and denominator at most `max_bits` bits, checked *before* a power is computed, so
9**9**9 is refused without being evaluated). `evaluate` raises `CalcError` (a ValueError) for
every bad input; `calculate` returns the result text or `<error: reason>`, never raises.

Departures from Python's arithmetic: no floats (exact fractions), no `e` notation, no
underscores in numbers, no functions or names, only ASCII digits (a Unicode digit such as
"٣", which Python's `int` accepts, is an error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["CalcError", "CalculatorLimits", "calculate", "evaluate", "format_number"]


class CalcError(ValueError):
    """An expression the calculator refuses; the message is the short reason shown in
    `<error: ...>`."""


@dataclass(frozen=True)
class CalculatorLimits:
    max_length: int = 200      # characters in the expression
    max_depth: int = 32        # nested parentheses and unary signs
    max_exponent: int = 1000   # |e| in a ** e
    max_bits: int = 512        # bits of any numerator or denominator (~154 decimal digits)
    max_decimals: int = 6      # decimal places of a non-integer result

    def __post_init__(self) -> None:
        for name in ("max_length", "max_depth", "max_exponent", "max_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if isinstance(self.max_decimals, bool) or not isinstance(self.max_decimals, int) \
                or self.max_decimals < 0:
            raise ValueError(f"max_decimals={self.max_decimals!r} must be an integer >= 0")


_SPACE = " \t\n\r\f\v"   # ASCII whitespace only, like the pattern's \s under re.ASCII
_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*|\.\d+)|(\*\*|//|[-+*/%()]))", re.ASCII)


def _tokens(text: str) -> list[str]:
    """Numbers and operators, in order; CalcError at the first character that is neither."""
    out, pos = [], 0
    while pos < len(text):
        rest = text[pos:].lstrip(_SPACE)
        if not rest:
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise CalcError(f"unexpected character {rest[0]!r}")
        out.append(m.group(1) or m.group(2))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over the token list (one method per grammar rule)."""

    def __init__(self, tokens: list[str], limits: CalculatorLimits):
        self.tokens, self.pos, self.depth, self.limits = tokens, 0, 0, limits

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise CalcError("unexpected end of expression")
        self.pos += 1
        return tok

    def check(self, value: Fraction) -> Fraction:
        bits = self.limits.max_bits
        if value.numerator.bit_length() > bits or value.denominator.bit_length() > bits:
            raise CalcError("result too large")
        return value

    def nest(self) -> None:
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise CalcError("nested too deeply")

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op, rhs = self.take(), self.term()
            value = self.check(value + rhs if op == "+" else value - rhs)
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while self.peek() in ("*", "/", "//", "%"):
            op, rhs = self.take(), self.unary()
            if op != "*" and rhs == 0:
                raise CalcError("division by zero")
            value = self.check(value * rhs if op == "*" else value / rhs if op == "/"
                               else Fraction(value // rhs) if op == "//" else value % rhs)
        return value

    def unary(self) -> Fraction:
        if self.peek() in ("+", "-"):
            self.nest()
            sign = self.take()
            value = self.unary()
            self.depth -= 1
            return -value if sign == "-" else value
        return self.power()

    def power(self) -> Fraction:
        base = self.atom()
        if self.peek() != "**":
            return base
        self.take()
        self.nest()
        exponent = self.unary()
        self.depth -= 1
        return self.check(_power(base, exponent, self.limits))

    def atom(self) -> Fraction:
        tok = self.take()
        if tok == "(":
            self.nest()
            value = self.expr()
            if self.take() != ")":
                raise CalcError("expected ')'")
            self.depth -= 1
            return value
        if tok[0].isdigit() or tok[0] == ".":
            return self.check(Fraction(tok))
        raise CalcError(f"unexpected {tok!r}")


def _power(base: Fraction, exponent: Fraction, limits: CalculatorLimits) -> Fraction:
    """base ** exponent for an integer exponent, refusing results beyond the limits before
    computing them (the bits of x**e are about e times the bits of x)."""
    if exponent.denominator != 1:
        raise CalcError("non-integer exponent")
    e = exponent.numerator
    if abs(e) > limits.max_exponent:
        raise CalcError("exponent too large")
    if base == 0 and e < 0:
        raise CalcError("division by zero")
    if base == 0 or abs(base) == 1:
        return base ** e
    size = max(base.numerator.bit_length(), base.denominator.bit_length())
    if (size - 1) * abs(e) > limits.max_bits:
        raise CalcError("result too large")
    return base ** e


def evaluate(expression: str, limits: CalculatorLimits | None = None) -> Fraction:
    """The exact value of an arithmetic expression.

    Args:
        expression: e.g. "12 * (3 + 4) / 5".
        limits: the hard limits (default `CalculatorLimits()`).

    Returns:
        The value as a `Fraction`.

    Raises:
        CalcError: anything outside the grammar or the limits (the message says which).
    """
    limits = limits or CalculatorLimits()
    if not isinstance(expression, str):
        raise CalcError("not a string")
    if len(expression) > limits.max_length:
        raise CalcError("expression too long")
    tokens = _tokens(expression)
    if not tokens:
        raise CalcError("empty expression")
    parser = _Parser(tokens, limits)
    value = parser.expr()
    if parser.peek() is not None:
        raise CalcError(f"unexpected {parser.peek()!r}")
    return value


def format_number(value: Fraction, max_decimals: int = 6) -> str:
    """An integer as digits ("84", "-3"); anything else as a decimal rounded half-to-even to
    `max_decimals` places, trailing zeros dropped ("0.333333", "2.5")."""
    if value.denominator == 1:
        return str(value.numerator)
    scaled = round(value * 10 ** max_decimals)        # exact rounding of the fraction
    sign = "-" if scaled < 0 else ""
    whole, frac = divmod(abs(scaled), 10 ** max_decimals)
    digits = str(frac).rjust(max_decimals, "0").rstrip("0") if max_decimals else ""
    if not digits:
        return "0" if whole == 0 else f"{sign}{whole}"
    return f"{sign}{whole}.{digits}"


def calculate(expression: str, limits: CalculatorLimits | None = None) -> str:
    """The tool's answer to a call: the value of `expression` as text (see `format_number`),
    or `<error: reason>` for an expression it refuses. Never raises on any string.

    Args:
        expression: what the model wrote between the tool's tags.
        limits: the hard limits (default `CalculatorLimits()`).

    Returns:
        e.g. "84", "0.333333" or "<error: exponent too large>".
    """
    limits = limits or CalculatorLimits()
    try:
        return format_number(evaluate(expression, limits), limits.max_decimals)
    except CalcError as err:
        return f"<error: {err}>"
