#!/usr/bin/env bash
# Sets up .venv if needed, then runs the whole test suite. Real weights and images come
# from ../shared when it exists (tests that need them are skipped otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
if [ -d ../shared/weights ]; then
  export FASTPROTECT_WEIGHTS_DIR="${FASTPROTECT_WEIGHTS_DIR:-$(cd ../shared/weights && pwd)}"
fi
export WANDB_MODE=offline WANDB_SILENT=true
exec .venv/bin/python -m pytest "$@"
