"""Pre-flight checks of a dataset before training: ``cnnlab check SOURCE`` and the quick pass at the
start of ``cnnlab train``.

What is checked, split by split as training would split the data:
- exact duplicates within and across splits (a hash of the decoded pixels), and duplicates whose
  labels disagree;
- near duplicates across splits: candidates share a 64-bit perceptual hash (DCT of a 32x32
  thumbnail) up to ``NEAR_BITS`` bits, and are kept when their pixels differ by at most ``NEAR_MAD``
  on average (0..255); on Fashion-MNIST that finds re-used product photos, not merely similar items;
- class counts and the imbalance ratio (largest class / smallest class) of the training split;
- image shape, and grayscale images (R = G = B) in an RGB set;
- for folder and CSV sources: unreadable, truncated and oversized files, image sizes and modes, and
  for CSV tables, ids with no file on disk and image files in the table's folders that it does not list.

The report is a plain dict (JSON-able); ``findings`` turns it into warnings (errors with strict).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np

from ..errors import CnnlabWarning
from .dataset import Dataset, in_chunks
from .images import printable, read_headers

NEAR_BITS = 6  # perceptual-hash bits two near duplicates may differ in (candidates)
NEAR_MAD = 4.0  # mean absolute pixel difference (0..255) up to which a candidate is a near duplicate
EXAMPLES = 5  # examples kept per finding


def pixel_hashes(x: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each image's decoded pixels (and shape): equal images, equal hashes."""
    digests = []
    for part in in_chunks(x):
        flat = part.reshape(len(part), -1)
        digests += [hashlib.blake2b(r.tobytes(), digest_size=8).digest() for r in flat]
    return np.frombuffer(b"".join(digests), dtype=np.uint64) if len(x) else np.zeros(0, np.uint64)


def _dct_matrix(n: int) -> np.ndarray:
    k, i = np.arange(n)[:, None], np.arange(n)[None]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    m[0] /= np.sqrt(2)
    return m * np.sqrt(2 / n)


def perceptual_hashes(x: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """pHash: the signs (above the median) of the 63 lowest DCT frequencies of a 32x32 grayscale
    thumbnail, packed into a uint64. Similar-looking images differ in few bits."""
    import torch
    import torch.nn.functional as F

    d = torch.tensor(_dct_matrix(32), dtype=torch.float32)
    shifts = np.arange(63, dtype=np.uint64)
    out = np.zeros(len(x), np.uint64)
    for i in range(0, len(x), chunk):
        t = torch.from_numpy(np.ascontiguousarray(x[i:i + chunk])).permute(0, 3, 1, 2).float().mean(1, keepdim=True)
        t = F.interpolate(t, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)[:, 0]
        low = (d @ t @ d.T)[:, :8, :8].reshape(len(t), 64)[:, 1:]
        bits = (low > low.median(1, keepdim=True).values).numpy().astype(np.uint64)
        out[i:i + chunk] = (bits << shifts).sum(1, dtype=np.uint64)
    return out


def _ref(ds: Dataset, split: str, i: int) -> dict:
    s = ds.splits[split]
    ref = {"split": split, "index": int(i)}
    if s.ids is not None:
        ref["id"] = s.ids[i]
    if s.y is not None:
        ref["label"] = ds.class_names[int(s.y[i])]
    return ref


def exact_duplicates(ds: Dataset, hashes: dict[str, np.ndarray]) -> dict:
    names = list(hashes)
    allh = np.concatenate([hashes[k] for k in names]) if names else np.zeros(0, np.uint64)
    owner = np.concatenate([np.full(len(hashes[k]), j) for j, k in enumerate(names)]) if names else np.zeros(0, int)
    local = np.concatenate([np.arange(len(hashes[k])) for k in names]) if names else np.zeros(0, int)
    _, inverse, counts = np.unique(allh, return_inverse=True, return_counts=True)
    dup = counts[inverse] > 1
    within = {k: int(len(hashes[k]) - len(np.unique(hashes[k]))) for k in names}
    across: dict[str, int] = {}
    conflicting, examples = 0, []  # type: tuple[int, list[list[dict]]]
    groups: dict[int, list[int]] = {}
    for pos in np.nonzero(dup)[0]:
        groups.setdefault(int(inverse[pos]), []).append(int(pos))
    for members in groups.values():
        splits_in = sorted({int(owner[p]) for p in members})
        for a in range(len(splits_in)):
            for b in range(a + 1, len(splits_in)):
                key = f"{names[splits_in[a]]}/{names[splits_in[b]]}"
                across[key] = across.get(key, 0) + sum(1 for p in members if owner[p] == splits_in[b])
        ys = [ds.splits[names[owner[p]]].y for p in members]
        labels = {int(y[local[p]]) for p, y in zip(members, ys) if y is not None}
        conflicting += len(labels) > 1
        if len(examples) < EXAMPLES and (len(splits_in) > 1 or len(labels) > 1):
            examples.append([_ref(ds, names[owner[p]], local[p]) for p in members[:4]])
    return {"within": within, "across": across, "conflicting_labels": conflicting, "examples": examples}


def near_duplicate_pairs(xa: np.ndarray, xb: np.ndarray, ha: np.ndarray, hb: np.ndarray,
                         block: int = 1024) -> list[tuple[int, int, float]]:
    """(index in a, index in b, mean absolute pixel difference) of near-duplicate pairs, exact copies
    included (difference 0). Candidates share one of 4 bands of 16 hash bits (two hashes within 3
    bits always do), are kept within NEAR_BITS bits, then compared pixel by pixel; all vectorised,
    in blocks of ``block`` images of b."""
    keys_a = [(ha >> np.uint64(16 * band)) & np.uint64(0xFFFF) for band in range(4)]
    orders = [np.argsort(k, kind="stable") for k in keys_a]
    sorted_keys = [k[o] for k, o in zip(keys_a, orders)]
    def rows(x, idx):  # flattened images; on disk only the rows asked for are read
        return np.asarray(x[idx]).reshape(len(idx), -1)

    found: list[tuple[int, int, float]] = []
    for j0 in range(0, len(hb), block):
        hbb = hb[j0:j0 + block]
        codes = []
        for band in range(4):
            kb = (hbb >> np.uint64(16 * band)) & np.uint64(0xFFFF)
            lo = np.searchsorted(sorted_keys[band], kb, "left")
            counts = np.searchsorted(sorted_keys[band], kb, "right") - lo
            total = int(counts.sum())
            if not total:
                continue
            jj = np.repeat(np.arange(len(hbb)), counts)
            pos = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)
            ii = orders[band][pos]
            close = np.bitwise_count(ha[ii] ^ hbb[jj]) <= NEAR_BITS
            codes.append(ii[close].astype(np.int64) * len(hbb) + jj[close])
        if not codes:
            continue
        pairs = np.unique(np.concatenate(codes))
        ii, jj = pairs // len(hbb), pairs % len(hbb)
        for c0 in range(0, len(ii), 4096):  # pixel differences in chunks: bounded memory
            i_c, j_c = ii[c0:c0 + 4096], j0 + jj[c0:c0 + 4096]
            mad = np.abs(rows(xa, i_c).astype(np.int16) - rows(xb, j_c).astype(np.int16)).mean(1)
            keep = mad <= NEAR_MAD
            found += zip(i_c[keep].tolist(), j_c[keep].tolist(), mad[keep].tolist())
    return sorted(found, key=lambda t: t[2])


def near_duplicates(ds: Dataset) -> dict:
    names = list(ds.splits)
    phash = {k: perceptual_hashes(ds.splits[k].x) for k in names}
    across, examples = {}, []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            A, B = names[a], names[b]
            pairs = [p for p in near_duplicate_pairs(ds.splits[A].x, ds.splits[B].x, phash[A], phash[B])
                     if p[2] > 0]  # exact copies are counted as exact duplicates, not again here
            across[f"{A}/{B}"] = len({j for _, j, _ in pairs})
            for i, j, mad in pairs[:EXAMPLES]:
                examples.append({"a": _ref(ds, A, i), "b": _ref(ds, B, j), "mean_abs_diff": round(mad, 2)})
    return {"across": across, "examples": examples[:2 * EXAMPLES], "max_bits": NEAR_BITS, "max_mad": NEAR_MAD}


def class_report(ds: Dataset) -> dict:
    counts = {k: np.bincount(s.y, minlength=ds.num_classes).tolist() for k, s in ds.splits.items()
              if s.y is not None}
    train: list[int] = counts.get("train") or next(iter(counts.values()), [])
    present = [c for c in train if c > 0]
    ratio = (max(present) / min(present)) if present else None
    missing = {k: [ds.class_names[i] for i, c in enumerate(v) if c == 0] for k, v in counts.items()}
    return {"names": list(ds.class_names), "counts": counts, "imbalance_ratio": ratio,
            "missing": {k: v for k, v in missing.items() if v}}


def check_dataset(ds: Dataset, near: bool = True) -> dict:
    """The array-level checks of a dataset with its splits."""
    pixel = {k: pixel_hashes(s.x) for k, s in ds.splits.items()}
    h, w, c = ds.input_shape
    gray_in_rgb = 0
    if c == 3:
        for s in ds.splits.values():
            for part in in_chunks(s.x):
                x = part.reshape(-1, h * w, 3)
                gray_in_rgb += int(((x[..., 0] == x[..., 1]) & (x[..., 1] == x[..., 2])).all(1).sum())
    report = {"source": ds.source, "splits": {k: len(s) for k, s in ds.splits.items()},
              "classes": class_report(ds), "images": {"shape": [h, w, c], "grayscale_in_rgb": gray_in_rgb},
              "exact_duplicates": exact_duplicates(ds, pixel)}
    if near:
        report["near_duplicates"] = near_duplicates(ds)
    if ds.info.get("skipped_images"):
        report["skipped_images"] = ds.info["skipped_images"]
    return report


# ------------------------------------------------------------------ files on disk

def scan_files(kind: str, path: str, opts) -> dict:
    """File-level findings for folder and CSV sources: what the headers say, and for CSV tables
    ids with no file and files the table does not list."""
    from . import files

    if kind == "folder":
        root = Path(path)
        layout = files.folder_layout(root) if root.is_dir() else {}
        paths = [p for folder in layout.values() for p in files.images_in(folder)]
        missing, unlisted = [], []
    else:
        p = Path(path)
        *_, ids = files.read_image_table(p, opts.label_column, opts.image_column)
        files.check_pattern(opts.image_pattern)
        listed = [p.parent / (files._fill(opts.image_pattern, v) if opts.image_pattern else v) for v in ids]
        paths = [q for q in listed if q.is_file()]
        missing = [printable(v) for v, q in zip(ids, listed) if not q.is_file()]
        known = {str(q.resolve()) for q in paths}
        folders = sorted({q.parent for q in paths})
        unlisted = [printable(q) for folder in folders for q in files.images_in(folder)
                    if q.parent == folder and str(q.resolve()) not in known]
    heads = read_headers(paths)
    return {"checked": len(paths),
            "sizes": [[h, w, n] for (h, w), n in heads.sizes.most_common(10)],
            "distinct_sizes": len(heads.sizes), "modes": dict(heads.modes.most_common()),
            "bad": [{"path": printable(paths[i]), "reason": r} for i, r in sorted(heads.bad.items())],
            "missing_ids": missing[:50], "missing_count": len(missing),
            "not_in_table": unlisted[:50], "not_in_table_count": len(unlisted)}


def check_source(cfg, near: bool = True) -> dict:
    """``cnnlab check``: file-level findings, then the data loaded and split as training would
    (unusable files and ids without a file left out, and listed) and the array-level checks."""
    from .sources import load_configured, parse_source
    from .split import prepare_splits

    kind, path = parse_source(cfg.source)
    if kind in ("folder", "csv") and path is not None and not Path(path).exists():
        from ..errors import MissingDataError

        raise MissingDataError(f"{'folder' if kind == 'folder' else 'table'} not found", path,
                               "check the path (cnnlab check folder:PATH or csv:FILE)")
    opts = cfg.data_options()
    opts.quiet, opts.on_bad_image = True, "skip"
    scan = scan_files(kind, path, opts) if kind in ("folder", "csv") and path is not None else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CnnlabWarning)
        ds = load_configured(cfg, opts, on_missing="skip")
    from .edits import apply_label_edits

    ds = prepare_splits(apply_label_edits(ds, cfg.exclude, cfg.relabel), cfg.val_split, cfg.test_split, cfg.seed)
    report = check_dataset(ds, near)
    if scan is not None:
        seen = {b["path"] for b in scan["bad"]}
        scan["bad"] += [b for b in ds.info.get("bad_images", []) if b["path"] not in seen]  # found decoding
        report["files"] = scan
    report["notes"] = [str(w.message) for w in caught]
    return report


# ------------------------------------------------------------------ findings and text

def findings(report: dict, strict: bool = False) -> list[tuple[str, str]]:
    """(level, message) pairs: 'error' or 'warning' for problems, 'note' for facts worth knowing.
    Leakage across splits is a warning, an error when ``strict``."""
    out = []
    leak = "error" if strict else "warning"
    ex = report["exact_duplicates"]
    for pair, n in ex["across"].items():
        if n:
            out.append((leak, f"{n:,} image(s) of the {pair.split('/')[1]} split are exact copies of "
                              f"{pair.split('/')[0]} images (leakage: the score is inflated)"))
    for pair, n in (report.get("near_duplicates") or {}).get("across", {}).items():
        if n:
            out.append((leak, f"{n:,} image(s) of the {pair.split('/')[1]} split are near copies of "
                              f"{pair.split('/')[0]} images (mean pixel difference <= {NEAR_MAD:g})"))
    if ex["conflicting_labels"]:
        out.append(("warning", f"{ex['conflicting_labels']:,} identical image(s) carry different labels"))
    for split, n in ex["within"].items():
        if n:
            out.append(("note", f"{n:,} exact duplicate(s) within the {split} split"))
    cl = report["classes"]
    if cl["imbalance_ratio"] and cl["imbalance_ratio"] >= 3:
        out.append(("warning", f"classes are imbalanced: the largest training class is {cl['imbalance_ratio']:.1f}x "
                               "the smallest (consider --class-weight balanced or --sampler balanced)"))
    for split, names in cl.get("missing", {}).items():
        out.append(("warning", f"the {split} split has no images of {', '.join(names[:5])}"))
    if report["images"]["grayscale_in_rgb"]:
        out.append(("note", f"{report['images']['grayscale_in_rgb']:,} grayscale image(s) in an RGB set"))
    f = report.get("files")
    if f:
        if f["bad"]:
            out.append(("warning", f"{len(f['bad']):,} file(s) cannot be used, first {f['bad'][0]['path']}: "
                                   f"{f['bad'][0]['reason']}"))
        if f["missing_count"]:
            out.append(("warning", f"{f['missing_count']:,} id(s) in the table have no image file, first "
                                   f"{f['missing_ids'][0]}"))
        if f["not_in_table_count"]:
            out.append(("note", f"{f['not_in_table_count']:,} image file(s) in the table's folders are not in "
                                f"the table, first {f['not_in_table'][0]}"))
        if f["distinct_sizes"] > 1:
            out.append(("note", f"{f['distinct_sizes']} different image sizes; they are resized to the most common"))
    return out


def format_report(report: dict, strict: bool = False) -> str:
    cl = report["classes"]
    lines = [f"check of {report['source']}: " + ", ".join(f"{k} {v:,}" for k, v in report["splits"].items())
             + f" images of {'x'.join(map(str, report['images']['shape']))}, {len(cl['names'])} classes"]
    from ..textwidth import ljust, width

    columns = max(8, *(width(n) for n in cl["names"]))
    lines.append(f"  {ljust('class', columns)}" + "".join(f"{k:>12}" for k in cl["counts"]))
    for i, name in enumerate(cl["names"]):
        lines.append(f"  {ljust(name, columns)}" + "".join(f"{v[i]:>12,}" for v in cl["counts"].values()))
    if cl["imbalance_ratio"]:
        lines.append(f"  imbalance ratio (largest / smallest training class): {cl['imbalance_ratio']:.2f}")
    ex = report["exact_duplicates"]
    lines.append("  exact duplicates: within " + ", ".join(f"{k} {v:,}" for k, v in ex["within"].items())
                 + "; across " + (", ".join(f"{k} {v:,}" for k, v in ex["across"].items()) or "none")
                 + f"; with conflicting labels {ex['conflicting_labels']:,}")
    nd = report.get("near_duplicates")
    if nd:
        lines.append("  near duplicates across splits: "
                     + ", ".join(f"{k} {v:,}" for k, v in nd["across"].items()))
        for e in nd["examples"][:5]:
            a, b = e["a"], e["b"]
            lines.append(f"    {a['split']} #{a['index']}{' (' + a['id'] + ')' if 'id' in a else ''} ~ "
                         f"{b['split']} #{b['index']}{' (' + b['id'] + ')' if 'id' in b else ''}: "
                         f"mean pixel difference {e['mean_abs_diff']}, labels {a.get('label')} / {b.get('label')}")
    f = report.get("files")
    if f:
        sizes = ", ".join(f"{h}x{w} ({n:,})" for h, w, n in f["sizes"][:3])
        lines.append(f"  files: {f['checked']:,} checked; sizes {sizes}; modes "
                     + ", ".join(f"{m} ({n:,})" for m, n in f["modes"].items()))
        for b in f["bad"][:10]:
            lines.append(f"    bad: {b['path']}: {b['reason']}")
    found = findings(report, strict)
    lines += [f"{level}: {msg}" for level, msg in found] or ["no problems found"]
    return "\n".join(lines)
