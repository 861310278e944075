#!/usr/bin/env bash
# Runs on a lent GPU machine, over a tree staged by tools/device_stage.sh (carry .device):
#   bash tools/device_eval.sh JOB [JOB...]
# Jobs (each `fastprotect evaluate --device cuda` on the whole validation split):
#   gputest    the test that the GPU's numbers match the CPU's
#   purify512  shipped model, per-image PGD-50 at the view, the unprotected image at the
#              view, sign noise; view 512; every purification but AdverseCleaner's filters
#              (OpenCV's contrib build is not on that machine), JPEG q90 included
#   view1024   shipped model and PGD-50 at the view; view 1024; clean and JPEG q75
#   pull512    shipped model and targeted PGD-100 at the view (toward the shipped model's
#              target: the latent pull to compare with); view 512; clean and JPEG q75
# Rows are journalled in device_runs/JOB, kept while the machine stays warm (30 s after a
# call): a job cut short is continued by the same call made at once. results.json comes
# back as $OUT/JOB.json (the rows so far as $OUT/JOB.jsonl while unfinished), the output as
# $OUT/JOB.log. EVAL_ARGS is added to each evaluate command
# (e.g. "--device cpu --limit 1" for a dry run without a GPU, with python3 on the PATH
# being a Python with this project's packages and DEVICE_NO_WHEELS=1, which skips
# installing .device/whl: those wheels are for that machine's Python 3.12).
set -uo pipefail
cd "$(dirname "$0")/.."
[ -d .device/data ] || {
  echo "device_eval: no .device/data; run tools/device_stage.sh here first" >&2
  exit 1
}
if [ -z "${DEVICE_NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site \
    .device/whl/*.whl || exit 1
fi
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 FASTPROTECT_SHARED="$PWD/.device"
export FASTPROTECT_WEIGHTS_DIR="$PWD/.device/weights"
out="${OUT:-device_out}"
mkdir -p "$out" device_runs
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt" || true
data=(.device/data/objects .device/data/faces .device/data/cartoon .device/data/extras)
# every job ends by DEVICE_BUDGET_S seconds after the start (set it to the call's timeout_s
# less 60, so that what is done still comes back); a job with under 60 s left is not begun
budget="${DEVICE_BUDGET_S:-540}"
for job in "$@"; do
  t=$(( budget - SECONDS ))
  if (( t < 60 )); then echo "device_eval: no time left for $job" >&2; break; fi
  case "$job" in
    gputest)
      timeout "$t" python3 -m pytest -q -p no:cacheprovider tests/test_evaluate.py \
        -k gpu_gives 2>&1 | tee "$out/gputest.log" ;;
    purify512)
      timeout "$t" python3 -m fastprotect evaluate "${data[@]}" --device cuda \
        --method mop --method pgdu:50 --method resized --method sign --view 512 --strength jnd \
        --transforms clean gnoise0.05 gnoise0.1 gnoise0.05_up4 gnoise0.1_up4 jpeg50 jpeg75 jpeg90 \
        crop_resize social impress --out device_runs/purify512 --resume ${EVAL_ARGS:-} 2>&1 \
        | tee "$out/purify512.log" ;;
    view1024)
      timeout "$t" python3 -m fastprotect evaluate "${data[@]}" --device cuda \
        --method mop --method pgdu:50 --view 1024 --strength jnd --transforms clean jpeg75 \
        --out device_runs/view1024 --resume ${EVAL_ARGS:-} 2>&1 | tee "$out/view1024.log" ;;
    pull512)
      timeout "$t" python3 -m fastprotect evaluate "${data[@]}" --device cuda \
        --method mop --method pgd:100 --view 512 --strength jnd --transforms clean jpeg75 \
        --out device_runs/pull512 --resume ${EVAL_ARGS:-} 2>&1 | tee "$out/pull512.log" ;;
    *) echo "device_eval: unknown job $job" >&2; exit 2 ;;
  esac
  for f in results.json partial.jsonl; do
    [ -f "device_runs/$job/$f" ] && cp "device_runs/$job/$f" "$out/$job.${f#*.}"
  done
done
ls -l "$out"
