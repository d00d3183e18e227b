"""Issue 31, item 3: the robustness report (cnnlab evaluate RUN --corruptions)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.data.corruptions import CORRUPTIONS, corrupt, resolve
from conftest import one_error_line, train_tiny_run


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_corruption_works_on_gray_and_rgb_any_size_and_repeats(name):
    rng = np.random.default_rng(0)
    for shape in ((5, 12, 12, 1), (3, 40, 56, 3)):
        x = rng.integers(20, 200, shape, dtype=np.uint8)
        for s in (1, 5):
            out = corrupt(x, name, s, seed=7)
            assert out.shape == x.shape and out.dtype == np.uint8
            assert np.array_equal(out, corrupt(x, name, s, seed=7)), "the same seed, the same images"
            assert not np.array_equal(out, x), "a corruption changes the images"
    mild, severe = corrupt(x, name, 1, seed=7), corrupt(x, name, 5, seed=7)
    if name != "invert":  # severity changes nothing there
        assert np.abs(severe.astype(int) - x).mean() >= np.abs(mild.astype(int) - x).mean() * 0.99


def test_names_and_did_you_mean():
    assert resolve("all") == list(CORRUPTIONS)
    assert resolve("rotate, jpeg,rotate") == ["rotate", "jpeg"]
    assert resolve(["gaussian-noise"]) == ["gaussian_noise"]
    with pytest.raises(Exception, match="did you mean rotate"):
        resolve("rotat")


def test_the_table_is_printed_saved_and_reported(tmp_path, capsys):
    run = train_tiny_run(tmp_path)
    assert main(["evaluate", str(run.path), "--corruptions", "--severity", "1", "5"]) == 0
    out = capsys.readouterr().out
    assert "mean corruption accuracy" in out and "relative drop" in out and "severity 5" in out
    table = json.loads((run.path / "evaluation-corruptions.json").read_text())
    assert set(table["table"]) == set(CORRUPTIONS) and table["severities"] == [1, 5]
    accs = [a for row in table["table"].values() for a in row.values()]
    assert abs(table["mean"] - np.mean(accs)) < 1e-9 and 0 <= min(accs) <= max(accs) <= 1
    assert main(["evaluate", str(run.path), "--corruptions", "rotate,jpeg", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert list(again["table"]) == ["rotate", "jpeg"] and again["severities"] == [3]
    assert main(["evaluate", str(run.path), "--corruptions", "rotate,jpeg", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["table"] == again["table"], "seeded: the same numbers twice"
    from cnnlab.report import build_report

    page = build_report(run).read_text(encoding="utf-8")
    assert "Robustness" in page and "one image under each corruption" in page


@pytest.mark.parametrize("argv,needle", [(["--corruptions", "rotat"], "did you mean rotate"),
                                         (["--corruptions", "--severity", "6"], "--severity")])
def test_bad_corruption_inputs_are_one_line(argv, needle, tmp_path, capsys):
    run = train_tiny_run(tmp_path)
    code = main(["evaluate", str(run.path), *argv])
    one_error_line(code, capsys.readouterr().err, needle)
