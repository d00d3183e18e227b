"""Classic machine-learning baselines on images: scikit-learn models on flattened, scaled pixels,
HOG features + a linear SVM, and XGBoost / LightGBM when installed.

Each baseline is fitted and scored by :func:`fit_and_score`, which can run in a child process
so that a time limit can stop it.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.preprocess import Preprocessing


@dataclass(frozen=True)
class Baseline:
    name: str
    kind: str
    description: str
    make: Callable[[int, int], Any]  # (seed, jobs) -> an unfitted estimator
    size: Callable[[object], tuple[int, str]]  # a fitted estimator -> (size, unit)
    features: str = "pixels"  # pixels | hog
    needs: str | None = None  # an optional package


# The registry: `cnnlab compare --models`, its help, "did you mean" and the leaderboard read it.
# Each entry registers where its estimator is made, below, in the order listings show them.
BASELINES: dict[str, Baseline] = {}


def _params(est) -> tuple[int, str]:
    return int(est.coef_.size + est.intercept_.size), "params"


def _tree_nodes(est) -> tuple[int, str]:
    return int(est.tree_.node_count), "nodes"


def _forest_nodes(est) -> tuple[int, str]:
    return int(sum(t.tree_.node_count for t in est.estimators_)), "nodes"


def baseline(name: str, kind: str, description: str, size: Callable = _params, features: str = "pixels",
             needs: str | None = None):
    """Register the decorated ``make(seed, jobs)`` as a baseline; ``size`` measures the fitted model
    (default: coefficients and intercepts, as parameters)."""
    def register(make):
        BASELINES[name] = Baseline(name, kind, description, make, size, features, needs)
        return make
    return register


@baseline("tree", "decision tree", "DecisionTreeClassifier", _tree_nodes)
def _tree(seed, jobs):
    from sklearn.tree import DecisionTreeClassifier
    return DecisionTreeClassifier(random_state=seed)


@baseline("forest", "ensemble (bagging)", "RandomForestClassifier, 100 trees", _forest_nodes)
def _forest(seed, jobs):
    from sklearn.ensemble import RandomForestClassifier
    return RandomForestClassifier(n_estimators=100, n_jobs=jobs, random_state=seed)


@baseline("extra-trees", "ensemble (bagging)", "ExtraTreesClassifier, 100 trees", _forest_nodes)
def _extra_trees(seed, jobs):
    from sklearn.ensemble import ExtraTreesClassifier
    return ExtraTreesClassifier(n_estimators=100, n_jobs=jobs, random_state=seed)


@baseline("logreg", "linear", "LogisticRegression (multinomial, lbfgs)")
def _logreg(seed, jobs):
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(max_iter=200)


def _stored_values(est) -> tuple[int, str]:
    return int(est.n_samples_fit_ * est.n_features_in_), "stored values"


@baseline("knn", "nearest neighbours", "KNeighborsClassifier, k = 5", _stored_values)
def _knn(seed, jobs):
    from sklearn.neighbors import KNeighborsClassifier
    return KNeighborsClassifier(n_neighbors=5, n_jobs=jobs)


def _linear_svm(seed, jobs):
    from sklearn.svm import LinearSVC
    return LinearSVC(C=1.0, dual="auto", max_iter=2000, random_state=seed)


baseline("linear-svm", "linear", "LinearSVC, C = 1")(_linear_svm)


@baseline("hgb", "ensemble (boosting)", "HistGradientBoostingClassifier, up to 100 rounds",
          lambda est: (int(sum(len(p.nodes) for it in est._predictors for p in it)), "nodes"))
def _hgb(seed, jobs):
    from sklearn.ensemble import HistGradientBoostingClassifier
    return HistGradientBoostingClassifier(max_iter=100, random_state=seed)


baseline("hog-svm", "features + linear", "HOG features (9 orientations, 2x2-cell blocks) + LinearSVC",
         features="hog")(_linear_svm)


@baseline("xgboost", "ensemble (boosting)", "XGBClassifier, 200 rounds, hist",
          lambda est: (int(len(est.get_booster().trees_to_dataframe())), "nodes"), needs="xgboost")
def _xgboost(seed, jobs):
    from xgboost import XGBClassifier
    return XGBClassifier(n_estimators=200, tree_method="hist", n_jobs=jobs, random_state=seed, verbosity=0)


def _lightgbm_nodes(est) -> tuple[int, str]:
    info = est.booster_.dump_model()["tree_info"]
    return int(sum(2 * t["num_leaves"] - 1 for t in info)), "nodes"


@baseline("lightgbm", "ensemble (boosting)", "LGBMClassifier, 200 rounds", _lightgbm_nodes, needs="lightgbm")
def _lightgbm(seed, jobs):
    from lightgbm import LGBMClassifier
    return LGBMClassifier(n_estimators=200, n_jobs=jobs, random_state=seed, verbose=-1)


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


# ---------------------------------------------------------------------------------------- HOG
def hog_features(x: np.ndarray, cell: int | None = None, bins: int = 9, chunk: int = 4096) -> np.ndarray:
    """Histogram-of-oriented-gradients features of uint8 (N, H, W, C) images, batched numpy.

    Dalal & Triggs' layout as in scikit-image's ``hog``: centred gradients, unsigned
    orientations in ``bins`` bins, ``cell`` x ``cell`` pixel cells (about 7 cells across: 4 px
    for 28 x 28, 2 for 8 x 8, at most 8), blocks of 2 x 2 cells with stride one cell, L2-Hys
    block normalisation. Matches ``skimage.feature.hog(..., block_norm="L2-Hys")``.
    """
    n, h, w, _ = x.shape
    cell = cell or min(8, max(2, round(min(h, w) / 7)))
    ch, cw = h // cell, w // cell
    if ch < 2 or cw < 2:
        raise ValueError(f"images of {h}x{w} are too small for HOG with {cell}-pixel cells")
    out = []
    for i in range(0, n, chunk):
        g = x[i:i + chunk].astype(np.float32).mean(-1)[:, :ch * cell, :cw * cell]  # grayscale
        gx = np.zeros_like(g)
        gy = np.zeros_like(g)
        gx[:, :, 1:-1] = g[:, :, 2:] - g[:, :, :-2]
        gy[:, 1:-1, :] = g[:, 2:, :] - g[:, :-2, :]
        mag = np.hypot(gx, gy)
        ang = np.rad2deg(np.arctan2(gy, gx)) % 180.0
        b = np.minimum((ang * (bins / 180.0)).astype(np.int64), bins - 1)
        m = len(g)
        hist = np.zeros((m, ch, cw, bins), np.float32)
        cell_y = (np.arange(ch * cell) // cell)[None, :, None]
        cell_x = (np.arange(cw * cell) // cell)[None, None, :]
        flat = ((np.arange(m)[:, None, None] * ch + cell_y) * cw + cell_x) * bins + b
        np.add.at(hist.reshape(-1), flat.ravel(), mag.ravel())
        hist /= cell * cell
        blocks = np.concatenate([hist[:, :-1, :-1], hist[:, :-1, 1:], hist[:, 1:, :-1], hist[:, 1:, 1:]], -1)
        eps = 1e-5
        blocks = blocks / np.sqrt((blocks ** 2).sum(-1, keepdims=True) + eps ** 2)
        blocks = np.minimum(blocks, 0.2)
        blocks = blocks / np.sqrt((blocks ** 2).sum(-1, keepdims=True) + eps ** 2)
        out.append(blocks.reshape(m, -1))
    return np.concatenate(out) if out else np.zeros((0, (ch - 1) * (cw - 1) * 4 * bins), np.float32)


def features(baseline: Baseline, x: np.ndarray, prep: Preprocessing) -> np.ndarray:
    if baseline.features == "hog":
        return hog_features(x)
    return prep.apply_numpy(x).reshape(len(x), -1)


def fit_and_score(name: str, x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray,
                  y_eval: np.ndarray, scale: str, seed: int, jobs: int) -> dict:
    """Fit one baseline on uint8 images and score it. Train time covers scaling, feature
    extraction and fitting; predict time covers the same for the evaluation images."""
    from sklearn.metrics import accuracy_score, f1_score
    from threadpoolctl import threadpool_limits

    baseline = BASELINES[name]
    with threadpool_limits(jobs), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning and friends: the score says it
        t0 = time.perf_counter()
        prep = Preprocessing.fit(scale, x_train)
        est = baseline.make(seed, jobs)
        est.fit(features(baseline, x_train, prep), y_train)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = np.asarray(est.predict(features(baseline, x_eval, prep))).astype(np.int64)
        predict_s = time.perf_counter() - t0
    size, unit = baseline.size(est)
    return {"accuracy": float(accuracy_score(y_eval, pred)),
            "macro_f1": float(f1_score(y_eval, pred, average="macro", zero_division=0)),
            "train_time_s": train_s, "predict_s": predict_s, "size": size, "size_unit": unit,
            "status": "ok"}


def _worker(conn):
    """A baseline worker: fits and scores one task after another until told to stop."""
    while True:
        try:
            args = conn.recv()
        except EOFError:
            return
        if args is None:
            return
        conn.send("started")  # the data has arrived; the clock starts now
        try:
            conn.send(fit_and_score(*args))
        except Exception as e:  # reported on the leaderboard; the comparison goes on
            conn.send({"status": "error", "error": f"{type(e).__name__}: {e}"})


class _Worker:
    """One spawned process (a fresh interpreter: no OpenMP state inherited from torch) that runs
    baselines under a time limit. It is reused from task to task, so the interpreter starts once
    per comparison, not once per model and fold; a task over its limit kills it, and the next
    task starts a new one."""

    proc = None
    conn: Any = None

    @classmethod
    def run(cls, args: tuple, time_limit: float) -> tuple[dict | None, int | None]:
        import multiprocessing as mp

        if cls.proc is None or not cls.proc.is_alive():
            ctx = mp.get_context("spawn")
            cls.conn, child = ctx.Pipe()
            cls.proc = ctx.Process(target=_worker, args=(child,), daemon=True)
            cls.proc.start()
            child.close()
        result = None
        try:
            cls.conn.send(args)
            # starting Python and receiving the data is not held against the model
            if cls.conn.poll(300) and cls.conn.recv() == "started" and cls.conn.poll(time_limit):
                result = cls.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            result = None
        if result is None:
            cls.proc.kill()
            cls.proc.join()
            code, cls.proc = cls.proc.exitcode, None
            return None, code
        return result, 0

    @classmethod
    def stop(cls) -> None:
        if cls.proc is not None and cls.proc.is_alive():
            try:
                cls.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            cls.proc.join(5)
            if cls.proc.is_alive():
                cls.proc.kill()
        cls.proc = None


def stop_worker() -> None:
    """End the baseline worker process (at the end of a comparison)."""
    _Worker.stop()


def _over(time_limit: float, took: float | None = None) -> dict:
    took_text = f"took {took:.1f} s, " if took is not None else ""
    return {"status": "timeout", "error": f"{took_text}over the time limit of {time_limit:g} s"}


def run_baseline(name: str, data: tuple, scale: str, seed: int, jobs: int, time_limit: float | None) -> dict:
    """``fit_and_score`` on ``data`` (x_train, y_train, x_eval, y_eval), in a worker process when
    there is a time limit, so that it can be stopped; a model that runs out of time gets status
    ``timeout``."""
    args = (name, *data, scale, seed, jobs)
    if time_limit is None:
        return fit_and_score(*args)  # the caller reports an exception as this model's error
    result, code = _Worker.run(args, time_limit)
    if result is None:
        if code not in (0, -9):
            return {"status": "error", "error": f"the process ended with exit code {code}"}
        return _over(time_limit)
    if result.get("status") == "ok" and result["train_time_s"] + result["predict_s"] > time_limit:
        return _over(time_limit, result["train_time_s"] + result["predict_s"])
    return result
