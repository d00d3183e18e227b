"""Every example in README.md and in the guides it links (docs/*.md, those in GUIDES, in that order)
runs, line by line, on tiny stand-ins for the data it names; every relative link resolves.

A "world" folder holds what the examples refer to: Fashion-MNIST and MNIST as small IDX files
(found through $CNNLAB_DATA), photos/, more/*.jpg, new_photos/, shoe.png, my.yaml, the competition
layout Fashion_MNIST/ and a run at runs/20261123-101500-fashion-cnn-fashion-mnist. ``RUN`` in
an example is that run. `cnnlab serve` builds its app and the test requests pages from it instead
of serving forever; the curl examples run against a real server on a free port.
"""

from __future__ import annotations

import base64
import re
import shlex
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.data.idx import write_idx
from conftest import free_port

README = Path(__file__).resolve().parent.parent / "README.md"
DOCS = README.parent / "docs"
# the guides whose examples run, in the order they run (the README's first); a block fenced as
# ```sh is shown, not run (it needs the internet, or a real machine's data)
GUIDES = [README] + [DOCS / f"{name}.md" for name in ("commands", "data", "models", "training", "deploy",
                                                       "pretrained", "compare", "tune", "api")]
RUN_ALIAS = "runs/20261123-101500-fashion-cnn-fashion-mnist"


def code_blocks(lang: str) -> list[str]:
    return [b for path in GUIDES for b in re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(encoding="utf-8"),
                                                     flags=re.S | re.M)]


def commands(block: str) -> list[str]:
    """Shell lines with their continuations joined; comment-only and empty lines dropped."""
    out, current = [], ""
    for line in block.splitlines():
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip() and not current.strip().startswith("#"):
            out.append(current.strip())
        current = ""
    return out


def idx_set(folder: Path, n_train: int = 200, n_test: int = 60, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        x[:, 2:26, 12:16] = (y[:, None, None].astype(np.int64) * 25).astype(np.uint8)  # a learnable stripe
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)


def image_folder(root: Path, classes: list[str], n: int, size: int, rgb: bool, fmt: str = "png", seed: int = 0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size, size, 3) if rgb else (size, size)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / c / f"{c}{i}.{fmt}")


def enter(mp, root: Path) -> None:
    mp.setenv("CNNLAB_DATA", str(root / "data"))
    mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
    mp.setenv("CNNLAB_OFFLINE", "1")
    mp.setenv("MPLBACKEND", "Agg")
    mp.setenv("CNNLAB_WEIGHTS_MIRROR", (root / "keras-mirror").as_uri())  # Keras Applications' files, Keras-written
    mp.chdir(root)


def keras_mirror(folder: Path) -> None:
    """The MobileNetV2 0.35 weights file for 96-pixel images, as Keras Applications lays it out,
    written by Keras itself (random weights: no network here)."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    from test_backbones import _applications_weights

    folder.mkdir()
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None)
    _applications_weights(model, folder / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5")


@pytest.fixture(scope="module")
def built_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    mp = pytest.MonkeyPatch()
    enter(mp, root)
    idx_set(root / "data" / "fashion-mnist")
    idx_set(root / "data" / "mnist", seed=1)
    image_folder(root / "photos", ["cats", "dogs"], 12, 40, rgb=True, fmt="jpg")
    image_folder(root / "new_photos", ["Trouser", "Bag"], 4, 28, rgb=False)
    image_folder(root / "more", ["x"], 3, 30, rgb=True, fmt="jpg")
    for f in (root / "more" / "x").iterdir():
        f.rename(root / "more" / f.name)
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (28, 28), dtype=np.uint8)).save(root / "shoe.png")
    keras_mirror(root / "keras-mirror")
    (root / "my.yaml").write_text("model: fashion-cnn\nbatch_size: 64\nrotation_range: 10\n")
    from cnnlab.tuning import example_space

    (root / "fashion_space.yaml").write_text(example_space().replace("epochs: 10", "epochs: 1"))  # quick trials
    assert main(["export-images", "fashion-mnist", "Fashion_MNIST"]) == 0
    classes = [line.split(",")[1] for line in (root / "Fashion_MNIST" / "train.csv").read_text().splitlines()[1:]]
    (root / "Fashion_MNIST" / "labels.csv").write_text("class\n" + "\n".join(classes) + "\n")
    assert main(["train", "--epochs", "1", "--quiet", "--no-report", "--name", "readme"]) == 0
    made = next((root / "runs").glob("*-readme"))
    shutil.copytree(made, root / RUN_ALIAS)
    # the notebook's ModelCheckpoint file: a Keras model taking x / 255.0, without cnnlab's metadata
    from cnnlab import load_run
    from cnnlab.models.kerasfiles import write_keras

    run = load_run(made)
    write_keras(root / "best-cnn-model.keras", run.spec, run.model.state_dict(), None, "best-cnn-model")
    mp.undo()
    return root


@pytest.fixture
def world(built_world, monkeypatch):
    """The world folder as the current directory, with its environment (set per test: the
    conftest's isolation resets the environment before each test)."""
    enter(monkeypatch, built_world)
    return built_world


@pytest.fixture
def mnist_mirror(world, monkeypatch):
    """`cnnlab download mnist` from a server on 127.0.0.1 with the tiny files' own MD5 sums."""
    import hashlib
    import http.server
    from functools import partial

    from cnnlab.data import builtin

    src = world / "data" / "mnist"
    files = {part: (name, hashlib.md5((src / name).read_bytes()).hexdigest())
             for part, (name, _) in builtin.IDX_SETS["mnist"].files.items()}
    monkeypatch.setitem(builtin.IDX_SETS, "mnist", builtin.IdxSet(
        "mnist", files, ("http://127.0.0.1:9/unreachable/",), builtin.IDX_SETS["mnist"].class_names, None, "test"))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(src))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("CNNLAB_MIRROR", f"http://127.0.0.1:{httpd.server_address[1]}/")
    monkeypatch.setenv("CNNLAB_OFFLINE", "0")
    yield
    httpd.shutdown()
    httpd.server_close()


def run_line(line: str, world: Path, monkeypatch, served: list) -> int:
    args = shlex.split(line, comments=True)
    assert args[0] == "cnnlab", line
    args = [str(world / RUN_ALIAS) if a == "RUN" else a for a in args[1:]]
    if args[0] == "serve":  # build the app it would serve and ask it for its pages
        import uvicorn

        monkeypatch.setattr(uvicorn, "run", lambda app, host, port, log_level: served.append((app, host, port)))
    return main(args)


def test_the_quickstart_is_what_ci_runs():
    (quick,) = [b for b in code_blocks("bash") if "scripts/run-main.sh" in b]
    assert [shlex.split(c, comments=True) for c in commands(quick)] == [["bash", "scripts/run-main.sh"],
                                                                       ["bash", "scripts/run-tests.sh"]]
    root = README.parent
    assert "scripts/run-tests.sh" in (root / ".ci" / "run").read_text()
    assert (root / "scripts" / "run-main.sh").read_text().rstrip().endswith('.venv/bin/cnnlab train "$@"')


def test_usage_examples(world, mnist_mirror, monkeypatch, capsys):
    blocks = [b for b in code_blocks("bash") if "cnnlab " in b and "curl " not in b]
    lines = [line for b in blocks for line in commands(b)]
    assert len(lines) >= 30
    served = []
    for line in lines:
        code = run_line(line, world, monkeypatch, served)
        err = capsys.readouterr().err
        assert code == 0, f"{line}\n{err[-2000:]}"
        assert "internal error" not in err and "Traceback" not in err, line
    from fastapi.testclient import TestClient

    assert sorted(s[1:] for s in served) == [("127.0.0.1", 8000)] * 3 + [("127.0.0.1", 8080)]
    for app, _, _ in served:
        client = TestClient(app)
        assert client.get("/").status_code == 200 and client.get("/api/runs").status_code == 200
    assert (world / "submission.csv").is_file() and (world / "preds.csv").is_file()
    assert (world / "check.json").is_file() and (world / "out" / "classes.txt").is_file()
    assert (world / "runs" / "best-cnn" / "report.html").is_file() and (world / "fashion-from-cnnlab.keras").is_file()


def test_yaml_spec_examples_parse():
    import yaml

    from cnnlab.models import parse_spec

    chain, graph, space = code_blocks("yaml")
    spec = parse_spec(yaml.safe_load(chain))
    assert spec.total_params == 333_526 and spec.is_chain
    spec = parse_spec(yaml.safe_load(graph))  # 160 + 2 x 2,320 + 170, as Keras counts it
    assert spec.total_params == 4_970 and not spec.is_chain
    assert spec.layers[3].inputs == ["stem", "conv2d_1"] and "Connected to" in spec.summary()
    from cnnlab.tuning.space import check_space, draw, first_values

    space = yaml.safe_load(space)
    check_space(space, "README")
    keys, model = draw(space, first_values)
    assert keys == {"epochs": 10, "batch_size": 32, "lr": 3.0e-4}
    assert parse_spec({**model, "input_shape": [28, 28, 1]}).layers[0].args["filters"] == 16


def test_curl_examples_against_a_real_server(world):
    import uvicorn

    from cnnlab.serve import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app([world / RUN_ALIAS]), host="127.0.0.1", port=port,
                                           log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.1)
        (block,) = [b for b in code_blocks("bash") if "curl " in b]
        b64 = base64.b64encode((world / "shoe.png").read_bytes()).decode()
        for line in commands(block):
            line = line.replace("localhost:8000", f"127.0.0.1:{port}").replace("<base64>", b64)
            res = subprocess.run(["bash", "-c", line + " --fail --silent --show-error"], cwd=world,
                                 capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, (line[:100], res.stderr)
            assert res.stdout.startswith("{"), res.stdout[:200]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_python_api_example_top_to_bottom(world):
    (block,) = code_blocks("python")
    namespace: dict = {}
    exec(compile(block, str(README) + ":python", "exec"), namespace)  # every line, in order
    import cnnlab

    assert callable(cnnlab.predict) and callable(cnnlab.train) and callable(cnnlab.evaluate)
    assert namespace["probs"].shape == (8, 10) and len(namespace["rows"]) == 1 + 24
    assert namespace["one"].shape == (1, 10) and namespace["arrays_run"].config["optimizer"] == "adam"
    assert isinstance(namespace["rows"][0]["top1_prob"], float)
    assert list(namespace["board"]["model"]) and namespace["ds"].class_names[0] == "티셔츠"


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_every_relative_link_in_the_readme_and_the_docs_resolves():
    broken = []
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{path.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{path.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_fits_and_the_index_links_every_guide():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    assert {p.name for p in DOCS.glob("*.md")} - {"index.md"} <= set(re.findall(r"\]\(([\w-]+\.md)\)", index))
