#!/usr/bin/env bash
# Screenshot an HTML report with headless Chromium (Debian: apt-get install chromium).
#   bash tools/screenshot.sh outputs/demo/report.html shot.png [WIDTHxHEIGHT]
# The README's picture of one report row:
#   .venv/bin/fastprotect demo outputs/demo/samples/astronaut.png --out outputs/demo_row
#   bash tools/screenshot.sh outputs/demo_row/report.html /tmp/row.png 1180x880
#   .venv/bin/python -c "from PIL import Image; Image.open('/tmp/row.png').convert('RGB').save('docs/demo_row.jpg', quality=88)"
set -euo pipefail
page=$1 out=$2 size=${3:-1300x1400}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "no chromium found (apt-get install chromium)" >&2; exit 2; }
[ -f "$page" ] || { echo "$page: no such file" >&2; exit 2; }
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size="${size/x/,}" --screenshot="$(realpath -m "$out")" \
  "file://$(realpath "$page")" 2>/dev/null
echo "wrote $out"
