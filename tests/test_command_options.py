"""Every command's options are declared once, as training keys are (cnnlab.options): each
command's parser, its --help (one default style), the checks of its values and the API's
keywords come from the declarations. An invalid value for every declared option ends in the one
line that names the flag, before the command does anything."""

from __future__ import annotations

import argparse
import importlib
import inspect

import pytest

import cnnlab
from cnnlab.cli import build_parser, main
from cnnlab.commands import COMMANDS
from cnnlab.comparison import CompareOptions
from cnnlab.config import TrainConfig
from cnnlab.data.sources import DataOptions
from cnnlab.errors import ConfigError
from cnnlab.importing import ImportOptions
from cnnlab.options import Choice, Interval, Rule, keys_of
from cnnlab.tuning.search import SearchOptions


def subparsers() -> dict[str, argparse.ArgumentParser]:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def declared(name: str):
    return importlib.import_module(f"cnnlab.commands.{name}").Options


@pytest.mark.parametrize("module", COMMANDS)
def test_every_option_of_every_command_is_declared(module):
    """No hand-written add_argument: each option of the parser is a declared key (the command's
    own, or a training or data key), its dest the key's name."""
    name = module.replace("_", "-")
    parser = subparsers()[name]
    opts = parser.get_default("_options")
    assert opts is declared(module), name
    known = set(keys_of(opts)) | set(keys_of(TrainConfig)) | set(keys_of(DataOptions))
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.dest in known, f"{name}: {action.option_strings or action.dest} is not declared"


@pytest.mark.parametrize("module", COMMANDS)
def test_help_shows_every_default_one_way(module):
    """One default style: "(default: ...)" at the end of every option that has one, from the
    declaration; never argparse's ArgumentDefaultsHelpFormatter or a %(default)s of its own."""
    parser = subparsers()[module.replace("_", "-")]
    assert parser.formatter_class is argparse.HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert "%(default)" not in (action.help or ""), action.dest
        optional = not action.required if action.option_strings else action.nargs == "?"
        if optional:
            assert action.help.rstrip().endswith(")") and "(default: " in action.help, (module, action.dest)
        else:
            assert "(default: " not in action.help, (module, action.dest)


def _bad_texts(k) -> list[str]:
    """Texts a user could type for a declared option that its declaration refuses."""
    c = k.option.check
    out = []
    if (int in k.types or float in k.types) and str not in k.types:
        out.append("x")
    if isinstance(c, Choice):
        out.append("bogus")
    elif isinstance(c, Interval):
        if c.lo is not None:
            out.append(str(c.lo if c.open_lo else c.lo - 1))
        if c.hi is not None:
            out.append(str(c.hi if c.open_hi else c.hi + 1))
    elif isinstance(c, Rule) and int in k.types:
        out.append("0")
    return out


POSITIONALS = {"evaluate": ["runs/none"], "calibrate": ["runs/none"], "predict": ["runs/none", "x.png"],
               "serve": ["runs/none"], "plot": ["runs/none", "curves"], "explain": ["runs/none", "x.png"],
               "export": ["runs/none"],
               "embed": ["runs/none", "x.png", "-o", "f.npy"], "summary": ["fast"], "report": ["runs/none"],
               "import_keras": ["m.keras"], "export_images": ["digits", "out"], "tune": ["--space", "s.yaml"]}
CASES = [(m, k.name) for m in COMMANDS for k in keys_of(declared(m)).values()
         if k.flag and not k.option.positional and _bad_texts(k)]


@pytest.mark.parametrize("module,key", CASES)
def test_a_bad_value_for_every_declared_option_is_one_line_naming_its_flag(module, key, tmp_path, capsys,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    k = keys_of(declared(module))[key]
    for text in _bad_texts(k):
        argv = [module.replace("_", "-"), *POSITIONALS.get(module, []), k.flag]
        argv += [text] * (k.option.nargs if isinstance(k.option.nargs, int) else 1)
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert f"({k.flag}" in err, err
        assert list(tmp_path.iterdir()) == [], "nothing is written"


# The API functions that take a command's declared options as keywords.
API = [(cnnlab.tune, SearchOptions), (cnnlab.compare, CompareOptions), (cnnlab.import_keras, ImportOptions)]


@pytest.mark.parametrize("func,options", API, ids=lambda v: getattr(v, "__name__", ""))
def test_the_api_takes_the_commands_options_with_the_same_defaults(func, options):
    params = inspect.signature(func).parameters
    assert any(p.kind is p.VAR_KEYWORD for p in params.values()), "the rest come as keywords"
    for name, k in keys_of(options).items():
        if name in params and params[name].default is not inspect.Parameter.empty:
            assert params[name].default == k.default, name


API_BAD = [(lambda: cnnlab.tune("digits", {}, trials=0), "trials must be a whole number of at least 1, got 0"),
           (lambda: cnnlab.tune("digits", {}, metric="accuracy"), "invalid choice 'accuracy' for metric"),
           (lambda: cnnlab.tune("digits", {}, time_limit=-1), "search_time_limit must be > 0"),
           (lambda: cnnlab.tune("digits", {"lr": {"loguniform": [1e-4, 1e-2]}}, trial_limit=5),
            "unknown key 'trial_limit'"),
           (lambda: cnnlab.compare("digits", cv=1), "cv must be a whole number >= 2, got 1"),
           (lambda: cnnlab.compare("digits", jobs=0), "jobs must be a whole number >= 1, got 0"),
           (lambda: cnnlab.import_keras("m.keras", scale="256"), "invalid choice '256' for scale"),
           (lambda: cnnlab.import_keras("m.keras", labels="fr"), "invalid choice 'fr' for labels")]


@pytest.mark.parametrize("call,message", API_BAD, ids=[m for _, m in API_BAD])
def test_the_api_checks_its_keywords_by_the_same_declarations(call, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        call()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,message", [
    (["tune", "--space", "s.yaml", "--trials", "0"], "trials must be a whole number of at least 1, got 0"),
    (["compare", "--cv", "1"], "cv must be a whole number >= 2, got 1"),
    (["import-keras", "m.keras", "--scale", "256"], "invalid choice '256' for scale")])
def test_the_command_line_says_what_the_api_says(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_registered_engine_is_a_choice_at_once(capsys):
    """Choices come from the registries when the parser is built: a new prediction engine is
    accepted by --engine of predict and serve without touching the commands."""
    from cnnlab.shipping import ENGINES, Engine, register_engine

    register_engine(Engine("echo", "the tests' engine", None))
    try:
        for name in ("predict", "serve"):
            text = " ".join(subparsers()[name].format_help().split())
            assert "echo" in text and "the tests' engine" in text, name
    finally:
        ENGINES.pop("echo")


def test_a_percent_sign_in_a_help_text_is_shown_as_written():
    """argparse formats help with %: a declared "95% TPR" once broke `cnnlab evaluate --help`."""
    from dataclasses import dataclass

    from cnnlab.options import add_arguments, option

    @dataclass
    class Opts:
        rate: float = option(0.95, "keeps 95% of the images (100% TPR is rarely possible)")

    p = argparse.ArgumentParser(prog="x")
    add_arguments(p, Opts, ())
    text = " ".join(p.format_help().split())
    assert "keeps 95% of the images (100% TPR is rarely possible) (default: 0.95)" in text
