#!/usr/bin/env bash
# Set-up command 2: install everything, then run the linter and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
CNNLAB_INSTALL_BROWSER=1 bash scripts/install.sh
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/mypy  # src/cnnlab, non-strict (pyproject.toml: [tool.mypy])
exec .venv/bin/python -m pytest -q "$@"
