#!/usr/bin/env bash
# Installs everything cnnlab needs on a fresh Debian-like machine, idempotently:
# Debian's Fashion-MNIST package (when apt is available), a virtual environment in .venv,
# the pinned CPU build of PyTorch first (an unpinned torch pulls a multi-GB CUDA build),
# then cnnlab itself with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="${CNNLAB_TORCH_VERSION:-2.13.0}"
PY="${PYTHON:-python3}"

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="$(command -v sudo || true)"; fi
  if [ "$(id -u)" = "0" ] || [ -n "$SUDO" ]; then
    echo "== installing dataset-fashion-mnist with apt-get"
    $SUDO apt-get update -qq || echo "warning: apt-get update failed" >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null \
      || echo "warning: could not install dataset-fashion-mnist; cnnlab will try to download it" >&2
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
.venv/bin/pip install -q -e ".[test]"
