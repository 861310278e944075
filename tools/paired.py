"""Paired per-image comparison of two methods of one ``fastprotect evaluate`` run.

    python tools/paired.py runs/taef2_v2_k0/eval1000/results.json k0_200 k0_1000

For each transform (and view, in view mode): the mean decode disruption of the
unprotected image, of method A and of method B, then B - A per image: its mean, spread
(population standard deviation) and on how many images B was higher. Then each method's
PSNR and low-frequency PSNR on clean images. Pairing by image removes most of the
image-to-image spread, so a small but consistent difference shows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="results.json of fastprotect evaluate")
    ap.add_argument("a", help="method A (the reference)")
    ap.add_argument("b", help="method B")
    args = ap.parse_args()
    doc = json.loads(Path(args.results).read_text())
    methods = doc["settings"]["methods"]
    for m in (args.a, args.b):
        if m not in methods:
            print(f"paired: no method {m!r} in {args.results}; it has {methods}", file=sys.stderr)
            return 2
    rows = {(r["method"], r["transform"], r["view"], r["image"]): r for r in doc["rows"]}
    views = sorted({r["view"] for r in doc["rows"]}, key=lambda v: (v is None, v))
    for t in doc["settings"]["transforms"]:
        for v in views:
            images = sorted(i for (m, tt, vv, i) in rows if (m, tt, vv) == (args.a, t, v))
            if not images:
                continue
            da = [rows[(args.a, t, v, i)]["disruption_db"] for i in images]
            db = [rows[(args.b, t, v, i)]["disruption_db"] for i in images]
            dn = [rows[("none", t, v, i)]["disruption_db"] for i in images]
            diff = [y - x for x, y in zip(da, db, strict=True)]
            where = f" view {v}" if v is not None else ""
            print(
                f"{t}{where}: unprotected {statistics.mean(dn):.2f} | {args.a} "
                f"{statistics.mean(da):.2f} | {args.b} {statistics.mean(db):.2f} | "
                f"{args.b} - {args.a} {statistics.mean(diff):+.2f} dB "
                f"(sd {statistics.pstdev(diff):.2f}; higher on {sum(d > 0 for d in diff)} of "
                f"{len(diff)} images)"
            )
    for m in (args.a, args.b):
        for e in doc["summary"]:
            if (e["method"], e["transform"], e["domain"]) == (m, "clean", "all"):
                where = f" view {e['view']}" if e.get("view") is not None else ""
                print(
                    f"{m}{where}: PSNR {e['psnr']:.2f} dB, low-frequency PSNR {e['lf_psnr']:.2f} dB"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
