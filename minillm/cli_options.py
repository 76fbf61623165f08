"""The command line's options: one per config field, one convention, old spellings kept a while.

`add_config_options(parser, GPTConfig, ...)` makes an option of every field of a config
dataclass: `--d-model` for `d_model`, typed from the field, `--flag / --no-flag` for a bool
(argparse's BooleanOptionalAction), and the help line is the comment the field carries in the
source (`minillm.utils.field_docs`), so the code and `--help` cannot drift apart.
`config_kwargs(args, GPTConfig)` reads them back as the dataclass's keyword arguments.

A renamed option keeps its old spelling for one release (`add_deprecated`): hidden from
--help, it still parses, into the new option's place, and says on stderr what replaces it:

    minillm train: --out-dir is deprecated; use --output-dir

`ArgumentParser` does the same for a boolean's old `--flag true|false` spelling, requires the
options in `needed` (so that a deprecated spelling satisfies them too) and runs a command's
`check(args)`, which turns a bad combination of options into a usage error (exit 2) whose
message says the fix.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import MISSING, fields

from minillm.utils import field_docs

__all__ = ["BOOL_WORDS", "ArgumentParser", "add_config_options", "add_deprecated",
           "config_kwargs"]

# the old `--flag true|false` spelling of a boolean (no digits: `--in-place 1` is a chapter)
BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _note_deprecated(prog: str, old: str, new: str) -> None:
    print(f"{prog}: {old} is deprecated; use {new}", file=sys.stderr)


class _Deprecated(argparse.Action):
    """An old spelling of an option, hidden from --help: it says what replaces it on stderr and
    stores its value as the new option would (`split` maps the value to several new ones)."""

    def __init__(self, option_strings, dest, use: str, split: Callable | None = None, **kwargs):
        super().__init__(option_strings, dest, help=argparse.SUPPRESS,
                         default=argparse.SUPPRESS, **kwargs)
        self.use, self.split = use, split

    def __call__(self, parser, namespace, values, option_string=None):
        _note_deprecated(parser.prog, option_string, self.use)
        for dest, value in (self.split(values) if self.split else {self.dest: values}).items():
            setattr(namespace, dest, value)


def add_deprecated(parser, old: str, new: argparse.Action, use: str | None = None,
                   split: Callable | None = None) -> None:
    """Keep `old` working for one release as a spelling of the option `new` (same dest, type
    and arity), with a deprecation note naming `use` (default: new's flag). `parser`: the
    parser or argument group to add it to."""
    parser.add_argument(old, action=_Deprecated, dest=new.dest, type=new.type, nargs=new.nargs,
                        metavar=new.metavar, use=use or new.option_strings[0], split=split)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, plus what every command shares: a boolean's old spelling `--flag true|false`
    still parses (as `--flag` / `--no-flag`, with a deprecation note); the options in `needed`
    (dest -> flag) must be given, by their name or a deprecated one; and `check(args)`, a
    command's rules across options, turns a bad combination into a usage error (exit 2) whose
    message names the fix."""

    def __init__(self, *args, check: Callable | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # `--lr -1e-3` is a value, as `--lr -0.001` is to argparse: its own pattern for
        # negative numbers has no exponent, so it took "-1e-3" for an option
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
        self.check = check
        self.needed: dict[str, str] = {}

    def parse_known_args(self, args=None, namespace=None):
        args = self._new_boolean_spelling(list(sys.argv[1:] if args is None else args))
        namespace, extras = super().parse_known_args(args, namespace)
        missing = [flag for dest, flag in self.needed.items() if getattr(namespace, dest) is None]
        if missing:
            self.error(f"the following arguments are required: {', '.join(missing)}")
        problem = self.check(namespace) if self.check else None
        if problem:
            self.error(problem)
        return namespace, extras

    def _new_boolean_spelling(self, args: list[str]) -> list[str]:
        flags = {flag for action in self._actions
                 if isinstance(action, argparse.BooleanOptionalAction)
                 for flag in action.option_strings if not flag.startswith("--no-")}
        out, i = [], 0
        while i < len(args):
            flag, eq, value = args[i].partition("=")
            if flag == "--":
                return out + args[i:]
            if flag in flags and not eq and i + 1 < len(args) and \
                    args[i + 1].lower() in BOOL_WORDS:
                i, value = i + 1, args[i + 1]
            if flag in flags and value.lower() in BOOL_WORDS:
                new = flag if BOOL_WORDS[value.lower()] else "--no-" + flag[2:]
                _note_deprecated(self.prog, f"{flag}{eq or ' '}{value}", new)
                out.append(new)
            else:
                out.append(args[i])
            i += 1
        return out


def _field_default(f):
    """What the dataclass field `f` defaults to (None: it has no default)."""
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def add_config_options(parser: ArgumentParser, cls, title: str, skip=(), renames=None,
                       converters=None, defaults=None, required=(), helps=None
                       ) -> dict[str, argparse.Action]:
    """One option per field of the dataclass `cls` (underscores become dashes), its help the
    field's comment (`field_docs`) and its default; `renames` gives a field another option name
    (its own spelling then stays as a deprecated alias). The type follows the field's: a bool
    is `--flag / --no-flag`, a list takes several values, `converters` parse the others. Every
    option defaults to None, which leaves the dataclass's own default (or the command's
    `defaults`, shown in --help) in place; a field without a default, or in `required`, must be
    given. `helps` are the command's own words for a field where the comment's do not fit.
    Returns the options by field name."""
    docs = {**field_docs(cls), **(helps or {})}
    group = parser.add_argument_group(title)
    actions = {}
    for f in fields(cls):
        if f.name in skip:
            continue
        name = (renames or {}).get(f.name, f.name)
        kind = str(f.type).removesuffix(" | None")
        if converters and f.name in converters:
            how = {"type": converters[f.name]}
        elif kind == "bool":
            how = {"action": argparse.BooleanOptionalAction}
        elif kind in ("int", "float", "str"):
            how = {"type": {"int": int, "float": float, "str": str}[kind]}
        elif kind == "list[str]":
            how = {"nargs": "+"}
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: {f.type} needs a converter")
        default = (defaults or {}).get(f.name, _field_default(f))
        needed = f.name in required or (f.default is MISSING and f.default_factory is MISSING)
        text = f"{docs[f.name]} ({'required' if needed else f'default: {default}'})"
        action = group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                                    help=text.replace("%", "%%"), **how)  # argparse's % format
        if needed:
            parser.needed[name] = action.option_strings[0]
        if name != f.name:
            add_deprecated(group, f"--{f.name.replace('_', '-')}", action)
        actions[f.name] = action
    return actions


def config_kwargs(args: argparse.Namespace, cls, skip=(), renames=None) -> dict:
    """The options of `cls`'s fields that were given (not None), by field name: what to pass to
    `cls(...)` so that its own defaults fill the rest."""
    renames = renames or {}
    given = {f.name: getattr(args, renames.get(f.name, f.name), None) for f in fields(cls)
             if f.name not in skip}
    return {name: value for name, value in given.items() if value is not None}
