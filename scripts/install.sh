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
