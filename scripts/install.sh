#!/usr/bin/env bash
# Installs everything cnnlab needs on a fresh Debian-like machine, idempotently:
# Debian's Fashion-MNIST package (when apt is available), a virtual environment in .venv,
# the pinned CPU build of PyTorch first (an unpinned torch pulls a multi-GB CUDA build),
# then cnnlab itself with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="${CNNLAB_TORCH_VERSION:-2.13.0}"
PY="${PYTHON:-python3}"

# Debian packages: the data always; Chromium for the browser tests when CNNLAB_INSTALL_BROWSER=1.
APT_PACKAGES=""
[ -d /usr/share/datasets/fashion-mnist ] || APT_PACKAGES="dataset-fashion-mnist"
if [ "${CNNLAB_INSTALL_BROWSER:-0}" = "1" ] && [ ! -x /usr/bin/chromium ]; then
  APT_PACKAGES="$APT_PACKAGES chromium"
fi
if [ -n "$APT_PACKAGES" ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="$(command -v sudo || true)"; fi
  if [ "$(id -u)" = "0" ] || [ -n "$SUDO" ]; then
    echo "== installing$APT_PACKAGES with apt-get"
    $SUDO apt-get update -qq || echo "warning: apt-get update failed" >&2
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT_PACKAGES >/dev/null \
      || echo "warning: could not install$APT_PACKAGES (the data can still be downloaded; browser tests skip)" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  echo "== installing torch==$TORCH_VERSION"
  .venv/bin/pip install -q "torch==$TORCH_VERSION"
fi
echo "== installing cnnlab"
.venv/bin/pip install -q -e ".[test,onnx,tune,track,labels]"
# Triton's model-configuration protobuf, for the tests of --format triton: tritonclient pins
# protobuf<7 and ml-dtypes<=0.5.4 (older than onnx's and keras' here), so only its own files are
# installed, without dependencies; the tests load tritonclient/grpc/model_config_pb2.py by path.
.venv/bin/pip install -q --no-deps "tritonclient==2.73.0"
# ONNX Runtime Web for cnnlab export --format web: its wasm backend's three files, from the npm
# package (pinned), into the Python package (src/cnnlab/web/ort, not in git), so that exporting
# needs no network. Without npm, web exports say how to get them; everything else works.
ORT_WEB_VERSION="1.31.1"
ORT_WEB=src/cnnlab/web/ort
if [ "$(cat "$ORT_WEB/VERSION" 2>/dev/null)" != "$ORT_WEB_VERSION" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "== fetching onnxruntime-web@$ORT_WEB_VERSION (npm)"
    ORT_TMP="$(mktemp -d)"
    (cd "$ORT_TMP" && npm pack -q "onnxruntime-web@$ORT_WEB_VERSION" >/dev/null \
      && tar xzf "onnxruntime-web-$ORT_WEB_VERSION.tgz" package/package.json package/dist/ort.wasm.min.js \
           package/dist/ort-wasm-simd-threaded.mjs package/dist/ort-wasm-simd-threaded.wasm)
    mkdir -p "$ORT_WEB"
    cp "$ORT_TMP"/package/dist/* "$ORT_TMP/package/package.json" "$ORT_WEB"/  # package.json: version, MIT licence
    echo "$ORT_WEB_VERSION" > "$ORT_WEB/VERSION"
    rm -rf "$ORT_TMP"
  else
    echo "warning: npm not found: cnnlab export --format web needs onnxruntime-web (install npm, rerun this)" >&2
  fi
fi
