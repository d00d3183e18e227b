import pytest

from cnnlab.config import make_config
from cnnlab.engine.schedules import lr_factor
from cnnlab.errors import ConfigError


@pytest.mark.parametrize("schedule", ["onecycle", "triangular", "cosine"])
def test_schedules_warm_up_then_anneal(schedule):
    total = 101
    f = [lr_factor(schedule, s, total, warmup=0.3) for s in range(total)]
    peak = f.index(max(f))
    assert abs(peak - 30) <= 1 and max(f) == pytest.approx(1.0)
    assert all(a <= b + 1e-12 for a, b in zip(f[:peak], f[1:peak + 1]))  # rises to the peak
    assert all(a >= b - 1e-12 for a, b in zip(f[peak:], f[peak + 1:]))  # then only falls
    assert f[-1] < 0.01


def test_constant_schedule():
    assert {lr_factor("constant", s, 10) for s in range(10)} == {1.0}


def test_recipe_fills_only_unset_keys():
    cfg = make_config(recipe="fast", epochs=7)
    assert cfg.schedule == "onecycle" and cfg.epochs == 7 and cfg.patience is None and cfg.batch_size == 64
    assert make_config().schedule == "constant" and make_config().patience == 2
    with pytest.raises(ConfigError, match="recipe"):
        make_config(recipe="fastest")


def test_fast_recipe_trains_on_every_image_unless_told():
    assert make_config(model="fast").val_split == 0.0
    assert make_config(model="fast", val_split=0.1).val_split == 0.1
    assert make_config(model="fashion-cnn", recipe="fast").val_split == 0.0
    assert make_config(model="fashion-cnn", recipe="keras").val_split == 0.2


def test_explicit_none_patience_disables_early_stopping():
    assert make_config(patience=None, explicit_none=["patience"]).patience is None


def test_flip_tta_requires_flip_training():
    with pytest.raises(ConfigError, match="horizontal-flip"):
        make_config(tta="flip")
    assert make_config(tta="flip", horizontal_flip=True).tta == "flip"


def test_a_recipes_mirrors_can_be_turned_off_and_its_mirrored_test_pass_goes_with_them():
    from cnnlab.cli import build_parser
    from cnnlab.config import TrainConfig
    from cnnlab.options import given

    best = make_config(model="best")
    assert best.horizontal_flip and best.tta == "flip"
    off = make_config(model="best", horizontal_flip=False)
    assert not off.horizontal_flip and off.tta == "none" and off.random_crop == best.random_crop
    with pytest.raises(ConfigError, match="horizontal-flip"):  # asked for both ways: said, not guessed
        make_config(model="best", horizontal_flip=False, tta="flip")
    args = build_parser().parse_args(["train", "--model", "best", "--no-horizontal-flip"])
    assert given(args, TrainConfig)["horizontal_flip"] is False
