#!/usr/bin/env bash
# Sets up .venv if needed, then runs the whole test suite. Real weights and images come
# from ../shared when it exists (tests that need them are skipped otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
# The web app's browser test drives Debian's chromium (skipped, with the reason, where no
# browser can be had). Installed only when missing and this user may install packages.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
  && command -v apt-get >/dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  echo "fastprotect: installing chromium for the browser test (apt-get)" >&2
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      --no-install-recommends chromium; } >/dev/null 2>&1 \
    || echo "fastprotect: could not install chromium; the browser test will be skipped" >&2
fi
if [ -d ../shared/weights ]; then
  export FASTPROTECT_WEIGHTS_DIR="${FASTPROTECT_WEIGHTS_DIR:-$(cd ../shared/weights && pwd)}"
fi
export WANDB_MODE=offline WANDB_SILENT=true
exec .venv/bin/python -m pytest "$@"
