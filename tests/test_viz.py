import numpy as np
import pytest
from matplotlib.figure import Figure

import cnnlab.viz as V
from cnnlab.viz.fonts import has_glyphs, setup_fonts
from conftest import train_tiny_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("viz"))


def test_every_figure_from_a_run(tiny_run, tmp_path):
    split = V.test_split(tiny_run)
    figs = {"curves": V.curves(tiny_run), "confusion": V.confusion(tiny_run), "samples": V.samples(tiny_run),
            "misclassified": V.misclassified(tiny_run), "kernels": V.kernels(tiny_run),
            "feature_maps": V.feature_maps(tiny_run), "histograms": V.histograms(tiny_run),
            "diagram": V.diagram(tiny_run), "gradcam": V.gradcam(tiny_run, split.x[:3]),
            "probabilities": V.probabilities(tiny_run, image=split.x[0], true=int(split.y[0])),
            "class_counts": V.class_counts(tiny_run)}
    for name, fig in figs.items():
        assert isinstance(fig, Figure), name
        out = tmp_path / f"{name}.png"
        fig.savefig(out)
        assert out.stat().st_size > 2000, name


def test_figures_from_arrays():
    cm = [[5, 1], [2, 7]]
    fig = V.confusion(cm, ["a", "b"])
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"5", "1", "2", "7"} <= texts
    fig = V.curves([{"epoch": 1, "loss": 1.0, "val_loss": 1.1, "accuracy": 0.5, "val_accuracy": 0.4},
                    {"epoch": 2, "loss": 0.5, "val_loss": 0.9, "accuracy": 0.8, "val_accuracy": 0.7}], best_epoch=2)
    assert any("best epoch 2" in t.get_text() for t in fig.axes[0].get_legend().get_texts())


def test_weight_histograms_compare_with_initial_statistics(tiny_run):
    import json

    init = json.loads((tiny_run.path / "weights_init.json").read_text())
    assert set(init) == {"conv2d", "dense", "dense_1"}
    assert abs(sum(init["conv2d"]["counts"]) - 8 * 9) == 0  # every weight of the 3x3x1x8 kernel counted


def test_gradcam_is_normalised_heatmap_at_input_size(tiny_run):
    from cnnlab.viz.inspect import grad_cam

    x = V.test_split(tiny_run).x[:4]
    cams, classes = grad_cam(tiny_run, x)
    assert cams.shape == (4, 12, 12) and cams.min() >= 0
    peaks = cams.max((1, 2))  # 1 where the class evidence is positive somewhere; all-zero maps are possible
    assert np.all(np.isclose(peaks, 1, atol=1e-5) | (peaks == 0)) and peaks.max() == pytest.approx(1)
    assert (classes == tiny_run.predict(x)).all()


def test_korean_labels_use_a_font_with_hangul_glyphs():
    import io
    import warnings

    font_file = setup_fonts()
    assert font_file is not None, "install koreanize-matplotlib or fonts-nanum"
    names = ["티셔츠", "바지", "앵클 부츠"]
    assert has_glyphs(font_file, "".join(names))
    fig = V.confusion([[1, 0, 0], [0, 1, 0], [0, 0, 1]], names)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # matplotlib warns "Glyph ... missing from font(s)" when it draws an empty box
        fig.savefig(io.BytesIO(), format="png")
        V.samples(np.zeros((3, 8, 8, 1), np.uint8), np.arange(3), names, n=3).savefig(io.BytesIO(), format="png")
    missing = [str(w.message) for w in caught if "missing from" in str(w.message)]
    assert not missing, missing
    # and without the Hangul font the same drawing does warn: the check can fail
    assert not has_glyphs(__import__("matplotlib").font_manager.findfont("DejaVu Sans"), names[0])


def test_curves_use_whole_epochs_and_feature_maps_say_how_many_channels():
    import numpy as np

    from cnnlab.viz import figures

    history = [{"epoch": e, "loss": 1 / e, "accuracy": e / 4, "val_loss": 1.1 / e, "val_accuracy": e / 5}
               for e in (1, 2, 3)]
    fig = figures.curves(history, best_epoch=2)
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    maps = [("conv2d", np.random.default_rng(0).random((100, 5, 5)))]
    titles = [ax.get_title(loc="left") for ax in figures.feature_maps(maps, max_channels=64).axes]
    assert any("channels 1-64 of 100" in t for t in titles)
    titles = [ax.get_title(loc="left") for ax in figures.feature_maps(maps, max_channels=128).axes]
    assert any("all 100 channels" in t for t in titles)
