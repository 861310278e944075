#!/usr/bin/env bash
# Stage what a lent GPU machine needs to run `fastprotect evaluate --device cuda` on the
# validation split, in .device/ (ignored by git, never committed):
#   .device/data/<domain>/...  the validation images of ../shared/data (about 25 MB)
#   .device/weights/           the TAEF2 weights
#   .device/whl/               wheels for what that machine's Python 3.12 lacks (kornia)
# That machine cannot reach a registry and carries at most 64 MiB, so nothing else goes.
# Then one call runs there, e.g. (docs/evaluation.md, "On a lent GPU"):
#   run(carry=[".device"], command="bash tools/device_eval.sh purify512")
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${FASTPROTECT_SHARED:-../shared}"
[ -d "$shared/data" ] || { echo "device_stage: no $shared/data" >&2; exit 1; }
rm -rf .device && mkdir -p .device/data .device/weights .device/whl
# the validation split, by the same rule evaluate uses (the split does not depend on where
# the files lie, so evaluate --split val there takes every one of them)
.venv/bin/python - "$shared/data" <<'EOF'
import shutil
import sys
from pathlib import Path

from fastprotect.eval.run import select_files

root = Path(sys.argv[1])
roots = [root / d for d in ("objects", "faces", "cartoon", "extras")]
for f in select_files(roots, "val"):
    dest = Path(".device/data") / f.relative_to(root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(f, dest)
print(f"device_stage: {len(list(Path('.device/data').rglob('*.*')))} validation images")
EOF
cp -r "$shared/weights/." .device/weights/
# kornia 0.9.0 as pyproject.toml pins it, and the kornia_rs this venv has with it, for
# CPython 3.12 on x86-64
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .device/whl kornia==0.9.0 kornia_rs==0.2.0
du -sh .device
