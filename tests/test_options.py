"""One table of configuration keys (cnnlab.options): every key declared once, and everything read
from it. An invalid value for every key, given through the API, a YAML file or a flag, ends in the
one-line error that names the key (API, YAML) or the flag (command line)."""

from __future__ import annotations

import pytest
import yaml

from cnnlab.cli import main
from cnnlab.config import KEYS, TrainConfig, make_config
from cnnlab.errors import ConfigError
from cnnlab.options import Choice, Interval, Rule, keys_of

TABLE = keys_of(TrainConfig)
# keys whose constraint is a rule of their own: one value each that breaks it
RULE_BREAKERS = {"image_size": [0, 0], "zoom_range": 1.5, "class_weight": "no-such-weights.txt",
                 "init_from": "no-such-run", "backbone": "mobilenet_v9", "weights": "no-such-file.h5",
                 "exclude": "no-such-file.csv", "relabel": "no-such-file.csv"}


def bad_values(k) -> list:
    """Values a user could mistype for the key: of the wrong type, and (typed right) outside its
    constraint."""
    out = [{"a": 1}]  # no key takes a mapping
    if k.is_bool:
        out.append("false")  # a quoted YAML false is a string, never false
    elif str in k.types:
        out.append("")
    c = k.option.check
    if isinstance(c, Choice):
        out.append("bogus")
    elif isinstance(c, Interval):
        if c.lo is not None:
            out.append(c.lo if c.open_lo else c.lo - 1)
        if c.hi is not None:
            out.append(c.hi if c.open_hi else c.hi + 1)
    elif isinstance(c, Rule):
        out.append(RULE_BREAKERS[k.name])
    return out


def test_every_key_is_declared_once_with_help_and_group():
    assert set(TABLE) == set(KEYS) and len(KEYS) == len(set(KEYS))
    for k in TABLE.values():
        assert k.option.help and k.option.group, k.name
    assert {k.name for k in TABLE.values() if isinstance(k.option.check, Rule)} == set(RULE_BREAKERS)


@pytest.mark.parametrize("name", list(TABLE))
def test_an_invalid_value_for_every_key_names_the_key(name, tmp_path):
    k = TABLE[name]
    for value in bad_values(k):
        with pytest.raises(ConfigError) as e:
            make_config(**{name: value})
        err = e.value
        assert name in err.what and err.where == name, (value, err.line())
        assert "\n" not in err.line() and err.fix, err.line()
        f = tmp_path / "c.yaml"  # the same value in a YAML file: the file and the key
        f.write_text(yaml.safe_dump({name: value}))
        with pytest.raises(ConfigError) as e:
            make_config(f)
        assert e.value.where == f"{f}: {name}", e.value.line()


def cli_bad_texts(k) -> list:
    """What a user can mistype after a flag (a boolean flag takes no text)."""
    if k.is_bool:
        return []
    n = k.option.nargs
    wrap = (lambda t: [t] * n) if isinstance(n, int) else (lambda t: [t])
    out = [wrap("")] if str in k.types else []
    if int in k.types or float in k.types:
        out.append(wrap("x"))
    for v in bad_values(k)[1:]:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(wrap(str(v)))
        elif isinstance(v, list):
            out.append([str(x) for x in v])
        elif v == "bogus" or isinstance(k.option.check, Rule):
            out.append(wrap(str(v)))
    return out


@pytest.mark.parametrize("name", [n for n in TABLE if cli_bad_texts(TABLE[n])])
def test_an_invalid_flag_for_every_key_is_one_line_naming_the_flag(name, tmp_path, capsys):
    k = TABLE[name]
    for texts in cli_bad_texts(k):
        argv = ["train", "--runs-dir", str(tmp_path / "runs"), "--no-report"]
        argv += texts if k.option.positional else [k.flag, *texts]
        if name == "runs_dir":
            argv = ["train", "--no-report", k.flag, *texts]
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert f"({k.flag})" in err and name in err, err
        assert not (tmp_path / "runs").exists()


def test_help_is_generated_from_the_table(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for k in TABLE.values():
        if k.option.positional:
            continue
        assert k.flag in text, k.name
        if not k.is_bool and k.option.default_text is None:
            shown = "none" if k.default is None else str(k.default)
            assert f"(default: {shown})" in text, k.name


def test_choice_errors_suggest_the_nearest_value(capsys):
    assert main(["train", "--optimizer", "adamm"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice 'adamm' for optimizer (--optimizer): did you mean adam?" in err
    with pytest.raises(ConfigError, match="did you mean sgd"):
        make_config(optimizer="sdg")


def test_none_and_numbers_from_flags(tmp_path):
    from cnnlab.cli import build_parser
    from cnnlab.commands import given_options

    args = build_parser().parse_args(["train", "--patience", "none", "--lr", "0.01", "--zoom-range", "0.1",
                                      "--image-size", "20", "24", "--time-limit", "off"])
    got = given_options(args)
    assert got == {"patience": None, "lr": 0.01, "zoom_range": 0.1, "image_size": [20, 24], "time_limit": None}
    assert build_parser().parse_args(["train", "--zoom-range", "0.8", "1.1"]).zoom_range == ["0.8", "1.1"]


def test_recipes_are_one_table():
    from cnnlab.models.presets import PRESETS
    from cnnlab.recipes import RECIPES

    assert all(p.recipe is None or p.recipe in RECIPES for p in PRESETS.values())
    assert set(TABLE["recipe"].option.check.values) == set(RECIPES)
    cfg = make_config(model="fast")
    assert (cfg.lr, cfg.epochs, cfg.schedule, cfg.tta) == (0.008, 7, "onecycle", "flip")  # the preset's own, fast-bn
    assert make_config(model="fast", recipe="keras").lr is None


@pytest.mark.parametrize("command,new,dest", [("tune", "--search-time-limit", "search_time_limit"),
                                              ("compare", "--trial-time-limit", "trial_time_limit")])
def test_time_limits_have_distinct_names_and_the_old_spelling_still_works(command, new, dest):
    """`--time-limit` means one training in train; in tune the whole search is --search-time-limit,
    in compare each model and fold is --trial-time-limit; the old spelling stays an alias."""
    from cnnlab.cli import build_parser

    p = build_parser()
    base = [command, "fashion-mnist"] + (["--space", "s.yaml"] if command == "tune" else [])
    assert getattr(p.parse_args(base + [new, "60"]), dest) in (60, 60.0, "60")
    assert getattr(p.parse_args(base + ["--time-limit", "60"]), dest) == getattr(p.parse_args(base + [new, "60"]), dest)
    assert p.parse_args(["train", "fashion-mnist", "--time-limit", "60"]).time_limit in (60, 60.0, "60")
