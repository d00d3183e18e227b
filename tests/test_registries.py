"""Extension points are registries (issue 15): a layer kind, a data source and a compare baseline
are each one entry where they are defined, and the listings, help texts and "did you mean" hints
read the registries. Each test adds an entry of its own and removes it afterwards."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.cli import main
from cnnlab.data.dataset import Dataset, Split
from cnnlab.errors import ConfigError, DataError, SpecError
from cnnlab.models import build_module, parse_spec
from cnnlab.models.layers import ALIASES, LAYERS, LayerKind, register
from conftest import bars

README = Path(__file__).resolve().parent.parent / "docs" / "models.md"  # the layer list moved from the README


@pytest.fixture
def scaled_layer():
    """A layer kind added in one place: arguments, check, shape rule, count and torch build."""

    @register
    class Scale(LayerKind):
        name = "Scale"
        aliases = ("Multiply",)
        args = {"factor": 2.0}

        def infer(self, args, shape, where):
            if not isinstance(args["factor"], (int, float)) or args["factor"] == 0:
                raise SpecError(f"factor={args['factor']!r} is not a non-zero number", where, "use e.g. factor: 2")
            return shape, 1, 0  # one trainable weight, as a Keras layer with add_weight(shape=()) counts

        def build(self, info):
            class Mul(torch.nn.Module):
                def __init__(self, factor):
                    super().__init__()
                    self.weight = torch.nn.Parameter(torch.tensor(float(factor)))

                def forward(self, x):
                    return x * self.weight

            return [Mul(info.args["factor"])]

    yield Scale
    del LAYERS["Scale"], ALIASES["Multiply"]


def test_a_new_layer_kind_is_one_registry_entry(scaled_layer, capsys):
    spec = {"input_shape": [6, 6, 1], "layers": [
        {"type": "Conv2D", "filters": 2, "kernel_size": 3}, {"type": "Multiply", "factor": 3},
        {"type": "Flatten"}, {"type": "Dense", "units": 3, "activation": "softmax"}]}
    s = parse_spec(spec)
    assert [layer.type for layer in s.layers][1] == "Scale" and s.layers[1].trainable == 1
    assert s.total_params == 20 + 1 + 32 * 3 + 3
    model = build_module(s)
    assert model(torch.zeros(2, 1, 6, 6)).shape == (2, 3)
    assert sum(p.numel() for p in model.parameters()) == s.total_params
    with pytest.raises(SpecError, match="factor=0"):
        parse_spec({**spec, "layers": [spec["layers"][0], {"type": "Scale", "factor": 0}, *spec["layers"][2:]]})
    with pytest.raises(SpecError, match="did you mean Scale"):
        parse_spec({**spec, "layers": [spec["layers"][0], {"type": "Scal"}, *spec["layers"][2:]]})


def test_readme_lists_every_layer_kind_with_its_arguments():
    text = " ".join(README.read_text(encoding="utf-8").split())
    para = text[text.index("The supported layers are"):text.index("A spec may start with")]
    for kind in LAYERS.values():
        assert kind.name in para, kind.name
        for alias in kind.aliases:
            assert alias in text, alias
        m = re.search(r"\b" + re.escape(kind.name) + r" \(([^)]*)\)", para)
        described = m.group(1) if m else ""
        for arg in kind.args:
            assert arg in described, (kind.name, arg)


@pytest.fixture
def arrays_source():
    """A data source added in one place: a loader and its registry entry."""
    from cnnlab.data.registry import SOURCES, SourceKind, register_source

    def load(path, opts, names, require_labels, on_missing):
        x, y = bars(10, seed=int(path))
        return Dataset(f"bars:{path}", names or ["h", "v", "d"], {"train": Split(x, y)}, {"seed": int(path)})

    register_source(SourceKind("bars", load, "bar images made from a seed", takes_path=True,
                               reads_class_names=True, in_memory=True))
    yield
    del SOURCES["bars"]


def test_a_new_data_source_is_one_registry_entry(arrays_source, tmp_path, capsys):
    ds = cnnlab.load_dataset("bars:3", val_split=0, test_split=0.2, image_size=(8, 8))
    assert ds["train"].x.shape[1:] == (8, 8, 1) and ds.class_names == ["h", "v", "d"]
    assert main(["datasets"]) == 0
    assert "bars:PATH" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "bars:PATH" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(DataError, match="bars:PATH"):
        cnnlab.load_dataset("nope")


def test_unknown_sources_and_models_suggest_the_nearest(capsys):
    with pytest.raises(DataError, match="did you mean digits"):
        cnnlab.load_dataset("digit")
    with pytest.raises(ConfigError, match="did you mean forest"):
        cnnlab.compare("digits", ["forrest"])


@pytest.fixture
def dummy_baseline():
    """A compare baseline added in one place: its estimator and its size."""
    from cnnlab.comparison.baselines import BASELINES, baseline

    @baseline("majority", "constant", "DummyClassifier (most frequent class)", lambda est: (1, "params"))
    def _majority(seed, jobs):
        from sklearn.dummy import DummyClassifier
        return DummyClassifier(strategy="most_frequent")

    yield
    del BASELINES["majority"]


def test_a_new_baseline_is_one_registry_entry(dummy_baseline, capsys):
    from cnnlab.comparison import resolve_models
    from cnnlab.comparison.baselines import fit_and_score

    x, y = bars(10)
    scores = fit_and_score("majority", x, y, x, y, "255", 0, 1)
    assert scores["status"] == "ok" and scores["size"] == 1 and abs(scores["accuracy"] - 1 / 3) < 1e-9
    assert resolve_models("majority,forest") == ["majority", "forest"]
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "majority" in capsys.readouterr().out
    assert np.isfinite(scores["train_time_s"])
