"""Configuration keys, each declared once: its type, default, constraint, group, flag and help.

A key is a dataclass field made with :func:`key` (as scikit-learn declares parameters once and
reads them everywhere, and checks them with ``StrOptions``/``Interval``). Everything else is
generated from these declarations:

- the checks (:func:`check_values`), with one message form whose ``where`` is the flag on the
  command line and the key in a YAML file or the Python API;
- the command-line options (:func:`add_arguments`) and their ``--help`` text with the default;
- reading a flag's text into the key's type (:func:`from_text`);
- the list of valid keys for YAML files (:func:`keys_of`).

Foundation layer: nothing of cnnlab but the errors, and no third-party imports.
"""

from __future__ import annotations

import argparse
import difflib
import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields

from .errors import ConfigError


# ---------------------------------------------------------------------------- constraints
class Constraint:
    """What values a key takes beyond its type; ``describe`` completes "<key> must be ..."."""

    def ok(self, value) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Choice(Constraint):
    """One of ``values``; ``aliases`` maps other spellings (Keras' names, e.g. "Adam" or
    "RMSprop") to a value, and a value written in other letter case is that value. ``values`` may
    be a callable that lists a registry's names (the export formats, the trackers), read when the
    parser is built or a value is checked, so that a registered addition is a choice at once."""

    values: tuple | Callable[[], typing.Iterable]
    aliases: dict = field(default_factory=dict)

    def all(self) -> tuple:
        return tuple(self.values()) if callable(self.values) else self.values

    def canonical(self, value):
        """The value ``value`` stands for, or ``value`` itself when it is none of them."""
        values = self.all()
        if not isinstance(value, str) or value in values:
            return value
        if value in self.aliases:
            return self.aliases[value]
        folded = [v for v in values if isinstance(v, str) and v.lower() == value.lower()]
        folded += [a for k, a in self.aliases.items() if k.lower() == value.lower()]
        return folded[0] if len(set(folded)) == 1 else value

    def ok(self, value) -> bool:
        return value in self.all()

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.all()))


@dataclass(frozen=True)
class Interval(Constraint):
    """``lo <= v <= hi`` (``open_lo``/``open_hi`` make that end strict; None: unbounded)."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False

    def ok(self, value) -> bool:
        if self.lo is not None and (value < self.lo or (self.open_lo and value == self.lo)):
            return False
        return not (self.hi is not None and (value > self.hi or (self.open_hi and value == self.hi)))

    def describe(self) -> str:
        if self.hi is None:
            return f"{'>' if self.open_lo else '>='} {self.lo:g}"
        return f"in {'(' if self.open_lo else '['}{self.lo:g}, {self.hi:g}{')' if self.open_hi else ']'}"


@dataclass(frozen=True)
class Rule(Constraint):
    """A check that is neither a choice nor a range: ``test(value)`` is True when the value is good;
    else False (the message says "<key> must be <description>"), or (what, fix) for a message of
    its own (e.g. "unknown backbone 'x'", "did you mean ...")."""

    test: Callable
    description: str

    def ok(self, value) -> bool:
        return self.test(value) is True

    def describe(self) -> str:
        return self.description


# ---------------------------------------------------------------------------- declaration
@dataclass(frozen=True)
class Option:
    help: str | Callable[[], str]  # a callable: text read from a registry when --help is built
    check: Constraint | None = None
    group: str = "model and training"
    flag: str | None = ""  # "": --key-with-dashes; None: no flag (e.g. the positional source)
    short: str | None = None
    metavar: str | tuple | None = None
    nargs: int | str | None = None  # a list on the command line: 2, or "+" (one value: a scalar)
    item: type = float  # the type of each list element
    example: str | None = None  # a value that works, for the fix "use e.g. ..."
    default_text: str | None = None  # how --help shows the default, when its value says too little
    positional: bool = False  # an argument without a flag: nargs None (one, required unless ``required=False``)
    required: bool = False  # a flag the command needs (e.g. embed's --out); a positional: nargs "?" unless set
    aliases: tuple = ()  # other names of the key (Keras' validation_split): --validation-split, validation_split
    renamed_from: tuple = ()  # old names, still read (--time-limit for --search-time-limit); messages name them
    const: str | None = None  # with nargs "?": the value of the flag given alone (--corruptions: all)

    @property
    def other_names(self) -> tuple:
        return (*self.aliases, *self.renamed_from)


def key(default, help: str | Callable[[], str], check: Constraint | None = None, **kw) -> typing.Any:
    """A configuration key as a dataclass field: ``batch_size: int = key(32, "batch size", Interval(1))``."""
    return field(default=default, metadata={"option": Option(help, check, **kw)})


def option(default, help: str | Callable[[], str], check: Constraint | None = None, **kw) -> typing.Any:
    """A command's own option, declared as a key is (:func:`key`); it shows among the command's
    options unless ``group`` names one of the training keys' groups."""
    kw.setdefault("group", "")
    return key(default, help, check, **kw)


@dataclass(frozen=True)
class Key:
    name: str
    types: tuple  # the allowed types, NoneType included when the key may be left out
    default: object
    option: Option

    @property
    def flag(self) -> str | None:
        if self.option.positional:
            return self.name.upper()
        if self.option.flag is None:
            return None
        if self.option.flag:
            return self.option.flag
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.is_bool and self.default is True else f"--{dashed}"

    @property
    def is_bool(self) -> bool:
        return bool in self.types

    @property
    def optional(self) -> bool:
        return type(None) in self.types

    def example(self) -> str:
        if self.option.example is not None:
            return self.option.example
        if isinstance(self.option.check, Choice):
            return str(self.option.check.all()[0])
        if self.default is not None and (self.option.check is None or self.option.check.ok(self.default)):
            return str(self.default)
        if isinstance(self.option.check, Interval):
            lo = int(self.option.check.lo or 0)
            return str(lo + 1 if self.option.check.open_lo else lo)
        return "..."


_KEYS_CACHE: dict[type, dict[str, Key]] = {}


def keys_of(cls) -> dict[str, Key]:
    """The declared keys of a dataclass (its bases' included), by name, in field order."""
    if cls not in _KEYS_CACHE:
        hints = typing.get_type_hints(cls)
        out = {}
        for f in fields(cls):
            if "option" not in f.metadata:
                continue
            t = hints[f.name]
            allowed = typing.get_args(t) if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union \
                else (t,)
            allowed = tuple(typing.get_origin(a) or a for a in allowed)
            default = f.default if f.default is not MISSING else None
            out[f.name] = Key(f.name, allowed, default, f.metadata["option"])
        _KEYS_CACHE[cls] = out
    return _KEYS_CACHE[cls]


# ---------------------------------------------------------------------------- checks
_TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a non-empty string",
               list: "a list", tuple: "a list"}


class Places:
    """Where each key's value came from, for the error's ``where`` and its fix: on the command
    line the flag (``--batch-size``, fix ``use e.g. --batch-size 32``), in a YAML file or the API
    the key (``batch_size``, fix ``use e.g. batch_size: 32``)."""

    def __init__(self, flags: typing.Iterable[str] = (), files: dict[str, str] | None = None):
        self.flags = set(flags)
        self.files = files or {}

    def where(self, k: Key) -> str:
        if k.name in self.flags and k.flag:  # with the old spellings, so that either reads right
            return k.flag + "".join(f" (--{a.replace('_', '-')})" for a in k.option.renamed_from)
        if k.name in self.files:
            return f"{self.files[k.name]}: {k.name}"
        return k.name

    def use(self, k: Key, value: str) -> str:
        if k.name in self.flags and k.flag:
            return f"{k.flag} {value}"
        return f"{k.name}: {value}"


def type_ok(k: Key, v) -> bool:
    if v is None:
        return k.optional
    if isinstance(v, bool):
        return bool in k.types
    if isinstance(v, int):
        return int in k.types or float in k.types
    if isinstance(v, float):
        return float in k.types and math.isfinite(v)
    if isinstance(v, str):
        return str in k.types and v != ""
    return any(isinstance(v, a) for a in k.types if a not in (type(None), bool, int, float, str))


def shown(v) -> str:
    """A value as a message shows it: short, and an array as its type and shape, never its contents."""
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return f"a {type(v).__name__} of shape {tuple(v.shape)}"
    text = repr(v)
    return text if len(text) <= 80 else f"a {type(v).__name__} ({text[:60]}...)"


def canonical_values(obj) -> None:
    """Replace each choice's other spellings (aliases, letter case) by the value they stand for."""
    for k in keys_of(type(obj)).values():
        if isinstance(k.option.check, Choice):
            setattr(obj, k.name, k.option.check.canonical(getattr(obj, k.name)))


def resolve_aliases(d: dict, cls, where: str = "arguments") -> dict:
    """Keys given under another name (``validation_split`` for ``val_split``) under their own; the
    same key given twice is an error."""
    names = {a: k.name for k in keys_of(cls).values() for a in k.option.other_names}
    out = {}
    for name, v in d.items():
        real = names.get(name, name)
        if real != name and real in d:
            raise ConfigError(f"{name} and {real} are the same setting, given twice", where, f"give only {real}")
        out[real] = v
    return out


def check_value(k: Key, v, places: Places | None = None) -> None:
    """The one message form: ``<key> must be <what>, got <value> (<where>): use e.g. <example>``
    (a choice: ``invalid choice <value> for <key> (<where>): use one of ...``)."""
    places = places or Places()
    where = places.where(k)
    if not type_ok(k, v):
        want = " or ".join(dict.fromkeys(_TYPE_WORDS.get(a, a.__name__) for a in k.types if a is not type(None)))
        if k.is_bool:
            fix = "give true or false without quotes" if k.name not in places.flags else f"use {k.flag}"
        else:
            fix = "use e.g. " + places.use(k, k.example()) + (", or leave it out" if k.optional else "")
        raise ConfigError(f"{k.name} must be {want}, got {shown(v)}", where, fix)
    c = k.option.check
    if v is None or c is None or c.ok(v):
        return
    if isinstance(c, Rule):
        said = c.test(v)  # a rule may say what exactly is wrong: (what, fix)
        if isinstance(said, tuple) and len(said) == 2:
            raise ConfigError(said[0], where, said[1])
    if isinstance(c, Choice):
        close = difflib.get_close_matches(str(v), [str(x) for x in c.all()], 1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"invalid choice {shown(v)} for {k.name}", where,
                          f"{hint}use one of {', '.join(map(str, c.all()))}")
    raise ConfigError(f"{k.name} must be {c.describe()}, got {shown(v)}", where,
                      "use e.g. " + places.use(k, k.example()))


def check_values(obj, places: Places | None = None) -> None:
    """Check every declared key of the dataclass instance ``obj``."""
    for k in keys_of(type(obj)).values():
        check_value(k, getattr(obj, k.name), places)


def check_names(d: dict, cls, where: str) -> None:
    """Every name in ``d`` is a key of ``cls``; otherwise the error says which, and what was meant."""
    valid = list(keys_of(cls))
    for name in d:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, 1)
            raise ConfigError(f"unknown key '{name}'", where,
                              f"did you mean '{close[0]}'?" if close else
                              "cnnlab train --help lists the keys (a flag --some-key is the key some_key)")


# ---------------------------------------------------------------------------- command line
NONE_WORDS = ("none", "off")


def from_text(k: Key, text):
    """A flag's text (or list of texts, for ``nargs``) as the key's value; a bad text is the one
    message form with the flag as ``where``."""
    places = Places(flags=[k.name])

    def convert(t: str, tp: type, whole: str | None = None):
        try:
            return tp(t)
        except ValueError:
            if whole is None:
                check_value(k, t, places)  # raises: the text is not of the key's type
            raise ConfigError(f"{k.name} must be {whole}, got {t!r}", k.flag,
                              "use e.g. " + places.use(k, k.example())) from None

    if isinstance(text, list):
        whole = k.option.check.describe() if k.option.check else _TYPE_WORDS[k.option.item]
        values = [convert(t, k.option.item, whole) for t in text]
        scalar_too = k.option.nargs == "+" and len(values) == 1 and (int in k.types or float in k.types)
        return values[0] if scalar_too else values
    if k.optional and text.lower() in NONE_WORDS and str not in k.types:
        return None
    if str in k.types:  # text is among its values (compare's per-model "20000,knn=5000")
        return text
    for tp in (int, float):
        if tp in k.types:
            return convert(text, tp)
    return text


def _help(k: Key) -> str:
    """A key's help with its default, in the one style every command uses: ``(default: ...)``;
    a ``%`` is written ``%%``, as argparse formats help text with ``%``."""
    o = k.option
    text = o.help() if callable(o.help) else o.help  # a registry's listing, read when the parser is built
    if o.required or (o.positional and k.default is None and not k.optional):
        return text.replace("%", "%%")
    if k.is_bool:
        shown = o.default_text or ("on" if k.default else "off")
    elif o.default_text:
        shown = o.default_text
    else:
        shown = "none" if k.default is None else (" ".join(map(str, k.default)) if isinstance(k.default, (list, tuple))
                                                  else str(k.default))
    return f"{text} (default: {shown})".replace("%", "%%")


def add_arguments(parser: argparse.ArgumentParser, cls, groups: typing.Sequence[str],
                  skip: typing.Container = (), only: typing.Container | None = None,
                  sections: dict | None = None) -> dict:
    """The keys of ``cls`` as options of ``parser`` (in argument groups named ``groups``, in that
    order, or in ``sections`` made before; a key of another group goes to the parser's own
    options). Values stay text (``dest`` = key, absent unless given): :func:`from_text` reads them
    (:func:`given`, :func:`read_options`). Returns the argument groups by name."""
    sections = dict(sections or {})
    sections.update({g: parser.add_argument_group(g) for g in groups if g not in sections})
    chosen = [k for k in keys_of(cls).values()
              if k.name not in skip and (only is None or k.name in only) and k.flag is not None]
    order = list(sections)
    for k in sorted(chosen, key=lambda k: order.index(k.option.group) if k.option.group in order else len(order)):
        o = k.option
        metavar = o.metavar
        if metavar is None and isinstance(o.check, Choice) and not k.is_bool:
            metavar = "{" + ",".join(map(str, o.check.all())) + "}"
        if o.positional:
            nargs = o.nargs if o.nargs is not None else (None if o.required else "?")
            parser.add_argument(k.name, nargs=nargs, default=argparse.SUPPRESS, metavar=o.metavar, help=_help(k))
            continue
        names = list(dict.fromkeys([k.flag] + ([o.short] if o.short else [])
                                   + ["--" + a.replace("_", "-") for a in o.other_names]))
        if o.group and o.group not in sections:  # a group of the command's own (tracking)
            sections[o.group] = parser.add_argument_group(o.group)
        section = sections[o.group] if o.group else parser
        if k.is_bool:
            # off by default: --no-NAME too, for a recipe that turns it on (the best preset mirrors images)
            action = "store_false" if k.default is True else argparse.BooleanOptionalAction
            section.add_argument(*names, dest=k.name, action=action, default=argparse.SUPPRESS, help=_help(k))
            continue
        extra: dict[str, typing.Any] = {"const": o.const} if o.nargs == "?" else {}
        section.add_argument(*names, dest=k.name, default=argparse.SUPPRESS, metavar=metavar, nargs=o.nargs,
                             required=o.required, help=_help(k), **extra)
    return sections


def read_options(args: argparse.Namespace, cls):
    """A command's own options (the dataclass ``cls``) read from the command line: each given one
    into its type, the others at their defaults, all checked by their declarations with the flag as
    ``where``; the values are set on ``args`` too (``args.trials``). Returns the ``cls`` instance."""
    flags = given(args, cls)
    try:
        opts = cls(**flags)
    except TypeError as e:  # a __post_init__ of the class that met a value of the wrong type
        raise ConfigError(str(e), "the command line", "see --help") from None
    check_values(opts, Places(flags))
    for name in keys_of(cls):
        setattr(args, name, getattr(opts, name))
    return opts


def checked(cls, where: str = "arguments", **values):
    """A command's options given as Python keywords (the API: ``cnnlab.tune(trials=...)``), made
    and checked by the same declarations as the command line; an unknown keyword names the
    closest key."""
    values = resolve_aliases(values, cls, where)
    check_names(values, cls, where)
    opts = cls(**values)
    check_values(opts)
    return opts


def given(args: argparse.Namespace, cls) -> dict:
    """The keys given on the command line, read into their types."""
    out = {}
    for k in keys_of(cls).values():
        if hasattr(args, k.name):
            v = getattr(args, k.name)
            out[k.name] = v if k.is_bool or k.option.positional else from_text(k, v)
    return out
