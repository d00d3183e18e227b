#!/usr/bin/env bash
# Set-up command 1: install everything, then train fashion-cnn on Fashion-MNIST with the
# notebooks' recipe and evaluate it on the test set. Extra arguments go to `cnnlab train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/cnnlab train "$@"
