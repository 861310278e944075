#!/usr/bin/env bash
# Stage what a lent GPU machine needs to run `fastprotect evaluate --device cuda` on the
# validation split, in .device/ (ignored by git, never committed):
#   .device/data/<domain>/...  the validation images of ../shared/data (about 30 MB)
#   .device/weights/taef2/     the TAEF2 weights
#   .device/whl/               wheels for what that machine's Python 3.12 lacks (kornia)
# That machine cannot reach a registry and carries at most 64 MiB, so nothing else goes.
# Then one call runs there (docs/evaluation.md, "On a lent GPU"):
#   run(carry=[".device"], command="bash tools/device_eval.sh gputest purify512")
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${FASTPROTECT_SHARED:-../shared}"
[ -d "$shared/data" ] || { echo "device_stage: no $shared/data" >&2; exit 1; }
new=$(mktemp -d .device.new.XXXXXX)
chmod 755 "$new"
trap 'rm -rf "$new"' EXIT
mkdir -p "$new/data" "$new/weights" "$new/whl"
# kornia 0.9.0 as pyproject.toml pins it, and the kornia_rs this venv has with it, for
# CPython 3.12 on x86-64 (first: a failed download leaves an earlier staging as it was)
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$new/whl" kornia==0.9.0 kornia_rs==0.2.0
# the validation split, by the same rule evaluate uses (the split does not depend on where
# the files lie, so evaluate --split val there takes every one of them)
.venv/bin/python - "$shared/data" "$new/data" <<'PY'
import shutil
import sys
from pathlib import Path

from fastprotect.eval.run import select_files

root, dest = Path(sys.argv[1]), Path(sys.argv[2])
files = select_files([root / d for d in ("objects", "faces", "cartoon", "extras")], "val")
for f in files:
    (dest / f.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(f, dest / f.relative_to(root))
print(f"device_stage: {len(files)} validation images")
PY
cp -r "$shared/weights/taef2" "$new/weights/"
chmod -R u+w "$new"
rm -rf .device && mv "$new" .device
trap - EXIT
du -sh .device
