#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv and installs
# fastprotect into it with its test extras. Idempotent: a second run with an unchanged
# pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
venv=.venv
stamp="$venv/.fastprotect-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "fastprotect: creating $venv with $($PY --version)" >&2
  "$PY" -m venv "$venv"
fi
echo "fastprotect: installing dependencies into $venv (first time: a few minutes, ~6 GB)" >&2
# pip -q still prints one line per empty local index on some machines; keep the rest.
quiet() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }
"$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | quiet
"$venv/bin/python" -m pip install -q -e ".[dev]" 2>&1 | quiet
"$venv/bin/python" -c "import fastprotect, torch, lightning, diffusers, lpips" 
echo "$want" > "$stamp"
