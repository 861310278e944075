#!/usr/bin/env bash
# Build the C++ example against the libtorch inside the installed torch wheel (no separate
# libtorch download). Usage: bash tools/cpp/build.sh [OUTPUT] (default: build/protect).
# PYTHON picks the interpreter whose torch to use (default: .venv/bin/python).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-build/protect}"
py="${PYTHON:-$here/../../.venv/bin/python}"
torch_dir="$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
abi="$("$py" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')"
mkdir -p "$(dirname "$out")"
set -x
"${CXX:-g++}" -std=c++20 -O2 -D_GLIBCXX_USE_CXX11_ABI="$abi" "$here/protect.cpp" -o "$out" \
  -isystem "$torch_dir/include" -isystem "$torch_dir/include/torch/csrc/api/include" \
  -L "$torch_dir/lib" -Wl,-rpath,"$torch_dir/lib" -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10
