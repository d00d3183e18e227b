"""How a model starts: weights loaded into it and layers frozen. An earlier model's weights by layer
name (``--init-from``), a backbone's pretrained file by Keras' layer names (``--weights``: imagenet,
a URL or a file, fetched once into the cache), and ``--freeze-until`` / ``--unfreeze-from``. Each
says what it did through ``say`` (a line of progress), and each mismatch is one error line naming the
layer, before any run directory exists."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from ..errors import SpecError
from .spec import Spec


def load_matching(model, spec: Spec, theirs: dict, names: dict | None, new_classes: bool, source: str,
                  say: Callable[[str], None]) -> dict:
    """An earlier model's weights ``theirs`` (a state dict: ``blocks.I.NAME``) into every layer of
    ``model`` whose name (``names``: the source's layer name -> index; None: by position) and weight
    shapes match. The output layer is re-initialised when it differs or when ``new_classes`` (new
    classes need a new head); any other layer that differs is an error naming it."""
    by_block: dict[int, dict] = defaultdict(dict)
    for k, v in theirs.items():
        parts = k.split(".", 2)
        if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit():
            by_block[int(parts[1])][parts[2]] = v
    state = model.state_dict()
    loaded, fresh, missing = [], [], []
    for i, layer in enumerate(spec.layers):
        mine = {k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"blocks.{i}.")}
        if not mine:
            continue  # no weights (pooling, dropout, ...)
        j = names.get(layer.name) if names is not None else i
        if j is None or j not in by_block:
            missing.append(layer.name)
            continue
        src = by_block[j]
        if i == len(spec.layers) - 1 and new_classes:
            fresh.append(layer.name)  # the same number of classes, but other ones: a new head
            continue
        if set(src) != set(mine) or any(tuple(src[k].shape) != tuple(v.shape) for k, v in mine.items()):
            if i == len(spec.layers) - 1:
                fresh.append(layer.name)  # a new head: other classes
                continue
            got = {k: list(v.shape) for k, v in src.items() if k.endswith("weight")}
            want = {k: list(v.shape) for k, v in mine.items() if k.endswith("weight")}
            raise SpecError(f"layer '{layer.name}' has weights {got} in {source} but {want} here", "--init-from",
                            "start from a run with the same input shape and channel count (--image-size, "
                            "--color-mode) and the same layers")
        for k, v in src.items():
            state[f"blocks.{i}.{k}"] = v.to(state[f"blocks.{i}.{k}"].dtype)
        loaded.append(layer.name)
    if not loaded:
        raise SpecError(f"no layer of {source} matches this model", "--init-from",
                        "start from a run of the same model (cnnlab summary shows the layer names)")
    model.load_state_dict(state)
    say(f"weights from {source}: loaded {', '.join(loaded)}"
        + (f"; re-initialised {', '.join(fresh)} (new output)" if fresh else "")
        + (f"; not in the source: {', '.join(missing)}" if missing else ""))
    return {"source": str(source), "loaded": loaded, "reinitialised": fresh, "not_in_source": missing}


def weights_file(backbone_text: str, weights: str, input_shape: tuple, quiet: bool = False,
                 include_top: bool = False) -> str:
    """``--weights``' local file for ``--backbone``: ``imagenet`` and URLs are fetched into the cache (once)."""
    from .backbones import parse_backbone
    from .pretrained import resolve_weights

    backbone, width = parse_backbone(backbone_text)
    size = input_shape[0] if input_shape[0] == input_shape[1] else None
    return str(resolve_weights(weights, backbone.name, width, size, include_top, quiet))


def pretrained_weights(model, spec: Spec, backbone_text: str, weights: str, input_shape: tuple,
                       say: Callable[[str], None], quiet: bool = False, include_top: bool = False) -> dict:
    """``--backbone NAME --weights imagenet|URL|FILE`` loaded into ``model`` (the file fetched once into
    the cache; BGR weights made to take RGB); ``include_top``: Keras' own top loads too."""
    from .backbones import parse_backbone

    path = weights_file(backbone_text, weights, input_shape, quiet, include_top)
    return backbone_weights(model, spec, path, say, parse_backbone(backbone_text)[0].bgr,
                            new_head=not include_top)


def backbone_weights(model, spec: Spec, path: str, say: Callable[[str], None], bgr: bool = False,
                     new_head: bool = True) -> dict:
    """``--weights FILE.h5``: a backbone's pretrained weights, layer by layer by Keras' names; the
    new head starts fresh (``new_head=False``: the file's top loads too). Every other layer must be
    in the file, with weights that fit. ``bgr``: the weights expect BGR pixels (Keras' caffe mode);
    the first convolution's input channels are reversed, so that it takes cnnlab's RGB and computes
    the same numbers."""
    from ..errors import SpecError
    from .kerasfiles import put_weights, read_weights

    head = [spec.layers[-1].name] if new_head else []
    order = [("input_layer", "InputLayer")] + [(layer.name, layer.type) for layer in spec.layers]  # Keras 3 files
    state, loaded, missing = put_weights(spec, model.state_dict(), read_weights(path, order), path, skip=tuple(head))
    if missing:
        raise SpecError(f"the weights file has no layer {missing[0]} ({len(missing)} of the backbone's layers are "
                        "not in it)", path, "give the weights file of the same backbone and width "
                        "(cnnlab backbones says which)")
    if bgr:
        from .kerasfiles import bgr_to_rgb

        bgr_to_rgb(spec, state)
    model.load_state_dict(state)
    say(f"weights from {path}: loaded {len(loaded)} layers" +
                         (f"; new head {', '.join(head)}" if head else ""))
    return {"source": str(path), "loaded": loaded, "reinitialised": head, "not_in_source": []}


def freeze_until(model, spec: Spec, name: str | None, say: Callable[[str], None],
                 unfreeze_from: str | None = None) -> None:
    """``--freeze-until NAME``: the layers up to and including NAME keep their weights.
    ``--unfreeze-from NAME``: every layer before NAME does (NAME may be a block: ``block5`` is the
    first layer whose name starts with ``block5_``), as Chollet unfreezes a network's last block."""
    if name is None and unfreeze_from is None:
        return
    import difflib

    from ..errors import SpecError

    names = [layer.name for layer in spec.layers]
    asked, flag = (name, "--freeze-until") if name is not None else (unfreeze_from, "--unfreeze-from")
    found = asked if asked in names else next((n for n in names if n.startswith(f"{asked}_")), None)
    if found is None:
        close = difflib.get_close_matches(str(asked), names, 1)
        shown = ", ".join(names) if len(names) <= 30 else ", ".join(names[:30]) + f" ... ({len(names)} layers)"
        raise SpecError(f"no layer or block named '{asked}'" if unfreeze_from else f"no layer named '{asked}'", flag,
                        (f"did you mean {close[0]}? " if close else "") + f"the layers are {shown}")
    last = names.index(found) - (1 if name is None else 0)
    if last < 0:
        raise SpecError(f"'{asked}' is the first layer: nothing comes before it to freeze", flag,
                        "name a later layer, or leave the option out")
    for i in range(last + 1):
        model.freeze(i)
    frozen = names[:last + 1]
    listed = ", ".join(frozen) if len(frozen) <= 8 else f"{', '.join(frozen[:3])} ... {frozen[-1]}"
    say(f"frozen: {len(frozen)} layer(s): {listed}")
