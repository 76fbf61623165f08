"""PII scrubbing: find e-mail addresses, phone numbers and IPv4 addresses with regular
expressions and replace each with a token (BigScience ROOTS, Laurençon et al. 2022,
arXiv:2303.03915, §3.3 and its regex-based PII pipeline; Zhao et al.'s survey, §4.1.3 "privacy
reduction").

    email   local@domain.tld          local: letters, digits, . _ % + -; tld: 2+ letters
    ipv4    a.b.c.d                   each 0-255, not inside a longer dotted number
    phone   +CC groups / (AAA) BBB-CCCC / AAA-BBB-CCCC, groups of 2-4 digits split by one space
            or hyphen, 9-15 digits in all

Matches are found for every kind, overlaps resolved by priority (email, then ipv4, then phone)
and replaced right to left, so offsets stay valid: "mail kate@example.org" -> "mail <EMAIL>".

Departures: no names or street addresses (a named-entity model is out of scope); the patterns
are tuned to the crawl's formats and to stay quiet on the plays, whose only digits are act and
scene numbers (tests count the false positives on all 37 plays).
"""

from __future__ import annotations

import re

__all__ = ["PII_PATTERNS", "PII_TOKENS", "find_pii", "scrub_pii"]

PII_TOKENS = {"email": "<EMAIL>", "ipv4": "<IP>", "phone": "<PHONE>"}
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
PII_PATTERNS = {
    "email": re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                        r"\.[A-Za-z]{2,}(?![\w-])"),
    "ipv4": re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\d]|\.\d)"),
    "phone": re.compile(r"(?<![\w+.])(?:\+\d{1,3}[ -]?)?(?:\(\d{2,4}\) ?|\d{2,4}[ -])"
                        r"\d{2,4}(?:[ -]\d{2,4}){0,2}(?![\w.]\w)(?!\w)"),
}
_MIN_PHONE_DIGITS, _MAX_PHONE_DIGITS = 9, 15


def find_pii(text: str) -> list[tuple[int, int, str]]:
    """The PII items in `text`: sorted, non-overlapping (start, end, kind) with kind one of
    "email", "ipv4", "phone"."""
    found: list[tuple[int, int, str]] = []
    for kind in ("email", "ipv4", "phone"):  # priority order
        for m in PII_PATTERNS[kind].finditer(text):
            if kind == "phone":
                digits = sum(c.isdigit() for c in m.group())
                if not _MIN_PHONE_DIGITS <= digits <= _MAX_PHONE_DIGITS:
                    continue
            s, e = m.span()
            if all(e <= fs or s >= fe for fs, fe, _ in found):
                found.append((s, e, kind))
    return sorted(found)


def scrub_pii(text: str, tokens: dict[str, str] | None = None,
              ) -> tuple[str, list[tuple[int, int, str]]]:
    """Replace every PII item with its token.

    Args:
        text: the document.
        tokens: replacement per kind (default `PII_TOKENS`: <EMAIL>, <IP>, <PHONE>).

    Returns:
        (scrubbed text, the items found in the original text as (start, end, kind)).

    Raises:
        ValueError: `tokens` lacks a kind.
    """
    tokens = PII_TOKENS if tokens is None else tokens
    missing = [k for k in PII_TOKENS if k not in tokens]
    if missing:
        raise ValueError(f"tokens has no replacement for {missing}; give one per kind of "
                         f"{list(PII_TOKENS)}")
    found = find_pii(text)
    out = text
    for s, e, kind in reversed(found):
        out = out[:s] + tokens[kind] + out[e:]
    return out, found
