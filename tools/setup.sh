#!/usr/bin/env bash
# Creates (or refreshes) a virtual environment and installs fastprotect into it.
#
#   bash tools/setup.sh            # .venv: everything (protect, train, evaluate, tests), ~6 GB
#   bash tools/setup.sh protect    # .venv-protect: protecting only, CPU-only torch, ~1.2 GB
#
# The protect install runs `fastprotect protect`, `demo`, `info`, `export` and `evaluate`
# (without LPIPS); training and the Lightning predict job need the full one. It installs
# torch==2.13.0 first, which this project's package registry serves as the CPU-only build.
# On a machine that uses PyPI directly (where Linux torch wheels carry CUDA), set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu to get the CPU-only wheel.
#
# Idempotent: a second run with an unchanged pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-full}
case "$mode" in
  full) venv=.venv; extras="[dev]"; what="~6 GB" ;;
  protect) venv=.venv-protect; extras=""; what="~1.2 GB" ;;
  *) echo "usage: bash tools/setup.sh [full|protect]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp="$venv/.fastprotect-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "fastprotect: creating $venv with $($PY --version)" >&2
  "$PY" -m venv "$venv"
fi
echo "fastprotect: installing dependencies into $venv (first time: a few minutes, $what)" >&2
# pip -q still prints one line per empty local index on some machines; keep the rest.
quiet() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }
# setuptools warns about editable installs in general (nothing to act on here)
export PYTHONWARNINGS=ignore
"$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | quiet
if [ "$mode" = protect ]; then
  "$venv/bin/python" -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
    "torch==2.13.0" 2>&1 | quiet
  "$venv/bin/python" -m pip install -q -e . 2>&1 | quiet
  "$venv/bin/python" -c "import fastprotect.protect, skimage, kornia"
else
  "$venv/bin/python" -m pip install -q -e ".$extras" 2>&1 | quiet
  "$venv/bin/python" -c "import fastprotect, torch, lightning, diffusers, lpips"
fi
echo "$want" > "$stamp"
