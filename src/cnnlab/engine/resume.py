"""Resume points: what continuing a run after an epoch needs (weights, optimizer state, every
random state, the history and the best epoch), taken from a training state and put back into a
new one. The loop loads a point (``load_resume_point``) and the ResumePoint callback saves one
(``training_state``); both import it from here, so neither imports the other."""

from __future__ import annotations

import os

import torch

from .distributed import SINGLE, Dist


def rng_states(generators: dict) -> dict:
    """Every random state a training step reads: torch's global generator (dropout), CUDA's, numpy's,
    Python's, and the loop's own generators (batch order, augmentation)."""
    import random

    import numpy as np

    kind, state_keys, pos, has_gauss, gauss = np.random.get_state()
    keys: np.ndarray = np.asarray(state_keys)
    out = {"torch": torch.get_rng_state(), "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                                                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
           "python": list(random.getstate()[1]), "generators": {k: g.get_state() for k, g in generators.items()}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(states: dict, generators: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((3, tuple(states["python"]), None))
    for k, g in generators.items():
        g.set_state(states["generators"][k])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def load_resume_point(resume: dict, model, opt, scaler, state, dist: Dist) -> None:
    """Weights, optimizer state and random states from a resume point into this run; a point that
    does not fit (another model or optimizer, damaged random states) is a RunError, never a crash
    in the middle of an epoch."""
    from ..errors import RunError, first_line

    part = "weights"
    try:
        model.load_state_dict(resume["model"])
        part = "optimizer state"
        opt.load_state_dict(resume["optimizer"])
        params = [p for group in opt.param_groups for p in group["params"]]
        for i, st in opt.state.items():  # torch loads mis-shaped moments and fails only at the step
            p = i if isinstance(i, torch.Tensor) else params[i] if isinstance(i, int) else None
            for v in (st.values() if isinstance(st, dict) else ()):
                if isinstance(v, torch.Tensor) and v.ndim and p is not None and v.shape != p.shape:
                    raise ValueError(f"a moment of shape {tuple(v.shape)} for a weight of shape {tuple(p.shape)}")
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        part = "random states"
        set_rng_states(resume["rng_ranks"][dist.rank] if "rng_ranks" in resume else resume["rng"], state.generators)
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        where = os.path.join(state.run_dir, "resume.pt") if state.run_dir else "resume.pt"
        raise RunError(f"resume.pt's {part} cannot be loaded into this run ({first_line(e, 200)})", where,
                       "the file is damaged or from another run: train again") from None


def training_state(state, dist: Dist = SINGLE) -> dict:
    """What resuming after ``state.epoch`` needs: weights, optimizer state, random states, the
    history (early stopping reads it) and the best epoch. The schedule's position follows from the
    epoch. Tensors are copied to the CPU, so the dict can be saved as it is."""
    def cpu(obj):
        if isinstance(obj, torch.Tensor):
            return obj.detach().cpu().clone()
        if isinstance(obj, dict):
            return {k: cpu(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(cpu(v) for v in obj)
        return obj

    rng = cpu(rng_states(state.generators))
    out = {"epoch": state.epoch, "model": cpu(state.model.state_dict()),
           "optimizer": cpu(state.optimizer.state_dict()), "rng": rng,
           "history": list(state.history), "best_epoch": state.best_epoch}
    if state.best_state is not None and state.best_epoch != state.epoch:  # else the best is "model"
        out["best_model"] = cpu(state.best_state)
    if state.scaler is not None:  # fp16 on CUDA: the loss scale in use
        out["scaler"] = state.scaler.state_dict()
    if dist.active:  # each rank draws its own augmentation and dropout: keep every rank's states
        out["rng_ranks"] = dist.gather(rng)
    return out
