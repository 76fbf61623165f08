"""The noise of a web crawl, generated: site boilerplate, keyword spam, machine gibberish and
synthetic personal data (PII).

These are the kinds of text the filters of Gopher (Rae et al. 2021, arXiv:2112.11446, app. A),
CCNet (Wenzek et al. 2019, arXiv:1911.00359) and the PII scrubbing of BigScience ROOTS
(Laurençon et al. 2022, arXiv:2303.03915) remove. Each generator is a pure function of a
`random.Random`, so `crawl.py` can rebuild the same crawl from a seed.

- **Boilerplate** (`make_site`): a site is a name, a navigation menu, a cookie banner and a
  footer, shared by every page of the site (so the same lines repeat across pages, as on the
  web: exact-substring dedup finds them).
- **Spam** (`spam_text`): keyword stuffing, a few commercial phrases repeated with little else.
- **Gibberish** (`gibberish_text`): four machine-made shapes — random letter strings (long
  "words"), tables of numbers and codes (few alphabetic words), bullet lists of link titles,
  and teaser lines that end in an ellipsis; each trips a different Gopher rule.
- **PII** (`fake_email`, `fake_phone`, `fake_ipv4`, `pii_sentence`): made-up e-mail
  addresses, phone numbers (four common formats) and IPv4 addresses, with the exact span of
  each item, so a scrubber's recall can be measured. Names and domains are invented
  (example-style domains); no real person's data is used.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["GIBBERISH_SHAPES", "PII_KINDS", "Site", "fake_email", "fake_ipv4", "fake_phone",
           "gibberish_text", "make_site", "pii_sentence", "spam_text"]

PII_KINDS = ("email", "phone", "ipv4")
GIBBERISH_SHAPES = ("random_letters", "number_table", "bullet_links", "ellipsis_teasers")

_FIRST = ("anna", "ben", "clara", "david", "elena", "farid", "grace", "hugo", "ines", "jonas",
          "kate", "liam", "maya", "noah", "olga", "pavel", "quinn", "rosa", "sami", "tara")
_LAST = ("archer", "baker", "cole", "dunn", "ellis", "frost", "gray", "hale", "irwin", "jones",
         "kemp", "lowe", "marsh", "nash", "oakes", "price", "reed", "shaw", "tate", "wood")
_DOMAINS = ("example.com", "example.org", "mail.example.net", "globe-theatre.example",
            "quillpost.example", "inkwell.example")
_SITE_WORDS = ("Globe", "Quill", "Bard", "Folio", "Stage", "Avon", "Rialto", "Forest", "Tempest",
               "Crown", "Sonnet", "Players")
_MENU = ("Home", "About", "Plays", "Sonnets", "Tickets", "Events", "Blog", "Shop", "Contact",
         "Login", "Search", "Archive", "News", "Help", "Privacy")
_COOKIE = (
    "We use cookies to improve your experience. By continuing to browse you agree to our use "
    "of cookies. [Accept all] [Manage preferences]",
    "This website uses cookies and similar technologies for analytics and personalised ads. "
    "Click OK to accept or visit Settings to choose.",
    "Cookies help us deliver our services. By using our services, you agree to our use of "
    "cookies. Learn more | Got it",
)
_SPAM_PHRASES = ("cheap tickets", "best price", "buy now", "free shipping", "discount code",
                 "limited offer", "click here", "online casino", "win big", "lose weight fast",
                 "top deals", "cheap hotels", "bonus", "sale", "order today")


@dataclass(frozen=True)
class Site:
    """The boilerplate every page of one site carries."""

    name: str
    header: str   # site name and navigation menu
    cookie: str   # cookie banner (empty on sites without one)
    footer: str   # copyright, links


def make_site(rng: random.Random) -> Site:
    """A made-up site: name, menu of 5-9 items, maybe a cookie banner, and a footer."""
    name = f"{rng.choice(_SITE_WORDS)} {rng.choice(_SITE_WORDS)}"
    menu = " | ".join(rng.sample(_MENU, rng.randint(5, 9)))
    cookie = rng.choice(_COOKIE) if rng.random() < 0.7 else ""
    year = rng.randint(2009, 2024)
    footer = (f"© {year} {name}. All rights reserved.\n"
              f"{' · '.join(rng.sample(['Terms of use', 'Privacy policy', 'Sitemap', 'Careers', 'Advertise', 'RSS'], 4))}")
    return Site(name, f"{name}\n{menu}", cookie, footer)


def spam_text(rng: random.Random, n_words: int) -> str:
    """Keyword stuffing: 2-4 phrases repeated in lines of 4-10 words, about `n_words` words."""
    phrases = rng.sample(_SPAM_PHRASES, rng.randint(2, 4))
    lines, written = [], 0
    while written < n_words:
        line = " ".join(rng.choice(phrases) for _ in range(rng.randint(2, 5)))
        if rng.random() < 0.3:
            line = line.upper() + "!!!"
        lines.append(line)
        written += len(line.split())
    return "\n".join(lines)


def _letters(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(lo, hi)))


def gibberish_text(rng: random.Random, shape: str, n_lines: int) -> str:
    """Machine-made text of one `shape` (see `GIBBERISH_SHAPES`), `n_lines` lines.

    Raises:
        ValueError: an unknown shape.
    """
    if shape not in GIBBERISH_SHAPES:
        raise ValueError(f"shape={shape!r} is unknown; choose one of {GIBBERISH_SHAPES}")
    lines = []
    for _ in range(n_lines):
        if shape == "random_letters":      # mean word length far above 10
            lines.append(" ".join(_letters(rng, 9, 24) for _ in range(rng.randint(4, 9))))
        elif shape == "number_table":      # few words with a letter in them
            lines.append(" ".join(rng.choice([str(rng.randint(0, 99999)),
                                              f"{rng.random() * 100:.2f}",
                                              f"#{rng.randint(0, 9999):04d}", "-", "|"])
                                  for _ in range(rng.randint(5, 10))))
        elif shape == "bullet_links":      # nearly every line starts with a bullet
            title = " ".join(_letters(rng, 3, 8).capitalize() for _ in range(rng.randint(2, 5)))
            lines.append(f"{rng.choice('•*-')} {title} >>")
        else:                              # teasers: lines end in an ellipsis
            words = " ".join(_letters(rng, 2, 8) for _ in range(rng.randint(3, 8)))
            lines.append(f"Read more: {words}{rng.choice(['...', '…'])}")
    return "\n".join(lines)


def fake_email(rng: random.Random) -> str:
    """A made-up address such as `clara.hale42@example.org`."""
    user = f"{rng.choice(_FIRST)}{rng.choice(['.', '_', ''])}{rng.choice(_LAST)}"
    if rng.random() < 0.5:
        user += str(rng.randint(1, 99))
    return f"{user}@{rng.choice(_DOMAINS)}"


def fake_phone(rng: random.Random) -> str:
    """A made-up phone number in one of four formats: `+44 20 7946 0958`, `(555) 014-2398`,
    `555-014-2398`, `+1 555 014 2398`."""
    d = lambda n: "".join(str(rng.randint(0, 9)) for _ in range(n))  # noqa: E731
    fmt = rng.randrange(4)
    if fmt == 0:
        return f"+44 20 {d(4)} {d(4)}"
    if fmt == 1:
        return f"({rng.randint(200, 999)}) {d(3)}-{d(4)}"
    if fmt == 2:
        return f"{rng.randint(200, 999)}-{d(3)}-{d(4)}"
    return f"+1 {rng.randint(200, 999)} {d(3)} {d(4)}"


def fake_ipv4(rng: random.Random) -> str:
    """A made-up IPv4 address, each octet 1-254."""
    return ".".join(str(rng.randint(1, 254)) for _ in range(4))


_PII_TEMPLATES = {
    "email": ("Contact the box office at {}.", "Questions? Write to {} and we reply within a day.",
              "Posted by {}"),
    "phone": ("Call us on {} (weekdays 9-5).", "Tickets by phone: {}.", "Tel. {}"),
    "ipv4": ("Your IP address {} has been logged.", "Served by node {} in 0.42 s.",
             "Last login from {}."),
}


def pii_sentence(rng: random.Random, kind: str) -> tuple[str, int, int]:
    """A sentence carrying one made-up PII item of `kind`, and the item's span in it.

    Returns:
        (sentence, start, end): sentence[start:end] is the e-mail, phone number or address.

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in PII_KINDS:
        raise ValueError(f"kind={kind!r} is unknown; choose one of {PII_KINDS}")
    item = {"email": fake_email, "phone": fake_phone, "ipv4": fake_ipv4}[kind](rng)
    template = rng.choice(_PII_TEMPLATES[kind])
    start = template.index("{}")
    return template.format(item), start, start + len(item)
