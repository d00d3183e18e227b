"""cnnlab: train, compare and explain convolutional image classifiers."""

__version__ = "0.1.0"

from .api import build_model, compare, evaluate, load_dataset, predict, summary, train  # noqa: E402
from .errors import CnnlabError  # noqa: E402
from .models import list_presets as list_models  # noqa: E402
from .runs import Run, load_run  # noqa: E402

__all__ = ["CnnlabError", "Run", "build_model", "compare", "evaluate", "list_models", "load_dataset",
           "load_run", "predict", "summary", "train", "__version__"]
