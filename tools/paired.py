"""Paired per-image comparison of two methods of one ``fastprotect evaluate`` run.

    python tools/paired.py runs/taef2_v2_k0/eval1000/results.json k0_200 k0_1000
    python tools/paired.py runs/a/results.json v1 capt --b-from runs/b/results.json

For each transform (and view, in view mode): the mean decode disruption of the
unprotected image, of method A and of method B, then B - A per image: its mean, spread
(population standard deviation) and on how many images B was higher. Then each method's
PSNR and low-frequency PSNR on clean images. Pairing by image removes most of the
image-to-image spread, so a small but consistent difference shows.

With ``--b-from``, method B is read from a second run's results.json (evaluation is
deterministic), so a new model can be paired with a reference measured earlier without
measuring the reference again. The pairs are the transforms and views that second run
measured; each of them must hold every image of A. ``--b-view-as V`` pairs the same model
at two views: B's rows (from a run of one view) count as rows of view V, A's view, so

    python tools/paired.py runs/at512/results.json shipped shipped \
        --b-from runs/at1024/results.json --b-view-as 512

gives view 1024 minus view 512 per image (the unprotected column is A's, at 512).

With ``--margins`` each method's disruption is replaced by its margin: its disruption
minus its reference's, on the same image after the same transform. The reference is the
unprotected image (``none``), or for a method published at the attacker's view (``--view``;
per-image PGD) the unprotected image published there (``resized``) when the run has it.
That is how a purification run compares a model with PGD (docs/evaluation.md): after
JPEG the unprotected image alone is damaged, and more so when it is published at the
smaller view. The means are then margins (there is no unprotected column), and each line
also says on how many images B's own margin is above zero, and its largest.

    python tools/paired.py DIR/results.json pgdu50 shipped --margins
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from fastprotect.eval.run import margin_references

#: settings that decide how a run scores its images: a run of B (--b-from) must share them
SCORING = ("size", "max_side", "eval_encoder", "decoder", "split", "val_fraction")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="results.json of fastprotect evaluate")
    ap.add_argument("a", help="method A (the reference)")
    ap.add_argument("b", help="method B")
    ap.add_argument(
        "--b-from",
        metavar="RESULTS",
        help="read method B from this results.json instead (same images, transforms, views)",
    )
    ap.add_argument(
        "--b-view-as",
        type=int,
        metavar="V",
        help="with --b-from: B's run has one view; pair its rows with A's at view V",
    )
    ap.add_argument(
        "--margins",
        action="store_true",
        help="compare margins: each method's disruption minus its reference's on the same "
        "image (the unprotected image, or for a method published at the attacker's view, "
        "per-image PGD, `resized`, the unprotected image published there, when the run has "
        "it); prints mean margins, and on how many images B's margin is above 0 and its "
        "largest",
    )
    args = ap.parse_args(argv)
    if args.b_view_as is not None and not args.b_from:
        print("paired: --b-view-as needs --b-from", file=sys.stderr)
        return 2
    if args.margins and args.b_from:
        print(
            "paired: --margins reads both methods and their references from one run; "
            "it does not take --b-from",
            file=sys.stderr,
        )
        return 2
    if args.margins and "none" in (args.a, args.b):
        print(
            "paired: --margins: 'none' is the reference that margins are measured against; "
            "name two protection methods",
            file=sys.stderr,
        )
        return 2
    doc = json.loads(Path(args.results).read_text())
    b_path = Path(args.b_from) if args.b_from else Path(args.results)
    doc_b = json.loads(b_path.read_text()) if args.b_from else doc
    b_views = {r["view"] for r in doc_b["rows"]}
    if args.b_view_as is not None and len(b_views) != 1:
        print(
            f"paired: {args.b_from} has views {sorted(b_views)}; --b-view-as needs one",
            file=sys.stderr,
        )
        return 2
    for m, d, path in ((args.a, doc, args.results), (args.b, doc_b, b_path)):
        if m not in d["settings"]["methods"]:
            have = d["settings"]["methods"]
            print(f"paired: no method {m!r} in {path}; it has {have}", file=sys.stderr)
            return 2
    if args.b_from:  # rows scored otherwise are no pairs, whatever the methods
        differ = [
            k
            for k in SCORING
            if doc["settings"].get(k, "<absent>") != doc_b["settings"].get(k, "<absent>")
        ]
        if differ:
            print(
                f"paired: {args.b_from} was scored otherwise than {args.results}: their "
                f"settings differ in {', '.join(differ)}",
                file=sys.stderr,
            )
            return 2
    rows = {(r["method"], r["transform"], r["view"], r["image"]): r for r in doc["rows"]}
    b = args.b
    if args.b_from:
        # B keeps its own label even where both runs call the method the same ("shipped")
        b = f"{args.b} ({b_path})" if args.b == args.a else args.b
        rows = {k: r for k, r in rows.items() if k[0] != b}
        rows_b = {
            (
                b,
                r["transform"],
                r["view"] if args.b_view_as is None else args.b_view_as,
                r["image"],
            ): r
            for r in doc_b["rows"]
            if r["method"] == args.b
        }
        # pair where B was measured: the transforms and views of its run, every image
        measured = {k[1:3] for k in rows_b}
        missing = {k[1:] for k in rows if k[0] == args.a and k[1:3] in measured}
        missing -= {k[1:] for k in rows_b}
        if missing:
            t, v, i = sorted(missing, key=str)[0]
            print(
                f"paired: {b_path} has no {args.b!r} row for {i} ({t}, view {v}); "
                f"{len(missing)} rows of {args.a!r} are unmatched",
                file=sys.stderr,
            )
            return 2
        rows.update(rows_b)
    views = sorted({r["view"] for r in doc["rows"]}, key=lambda v: (v is None, v))
    if args.margins:
        ref = margin_references(doc["settings"]["methods"], doc["rows"])
        print(f"Margins (dB), paired per image: {args.a} over {ref[args.a]}, {b} over {ref[b]}")
    pairs = 0
    for t in doc["settings"]["transforms"]:
        for v in views:
            images = sorted(i for (m, tt, vv, i) in rows if (m, tt, vv) == (args.a, t, v))
            if not images or not any(k[:3] == (b, t, v) for k in rows):
                continue
            pairs += 1
            where = f" view {v}" if v is not None else ""
            try:
                da, db, dn = (
                    [_disruption(rows, (m, t, v, i)) for i in images] for m in (args.a, b, "none")
                )
                if args.margins:  # each method's disruption over its reference's
                    da, db = (
                        [
                            d - _disruption(rows, (ref[m], t, v, i))
                            for d, i in zip(ds, images, strict=True)
                        ]
                        for m, ds in ((args.a, da), (b, db))
                    )
            except LookupError as e:
                print(f"paired: {t}{where}: {e}", file=sys.stderr)
                return 2
            diff = [y - x for x, y in zip(da, db, strict=True)]
            if args.margins:
                print(
                    f"{t}{where}: {args.a} {statistics.mean(da):+.2f} | "
                    f"{b} {statistics.mean(db):+.2f} | {b} - {args.a} "
                    f"{statistics.mean(diff):+.2f} dB (sd {statistics.pstdev(diff):.2f}; "
                    f"higher on {sum(d > 0 for d in diff)} of {len(diff)} images) | "
                    f"{b}'s margin above 0 on {sum(y > 0 for y in db)}, largest {max(db):+.2f}"
                )
                continue
            print(
                f"{t}{where}: unprotected {statistics.mean(dn):.2f} | {args.a} "
                f"{statistics.mean(da):.2f} | {b} {statistics.mean(db):.2f} | "
                f"{b} - {args.a} {statistics.mean(diff):+.2f} dB "
                f"(sd {statistics.pstdev(diff):.2f}; higher on {sum(d > 0 for d in diff)} of "
                f"{len(diff)} images)"
            )
    if not pairs:
        print(
            f"paired: {args.a!r} and {args.b!r} share no transform and view with every image "
            "measured; nothing to pair",
            file=sys.stderr,
        )
        return 2
    for m, label, d in ((args.a, args.a, doc), (args.b, b, doc_b)):
        for e in d["summary"]:
            if (e["method"], e["transform"], e["domain"]) == (m, "clean", "all"):
                where = f" view {e['view']}" if e.get("view") is not None else ""
                print(
                    f"{label}{where}: PSNR {_db(e.get('psnr'))}, "
                    f"low-frequency PSNR {_db(e.get('lf_psnr'))}"
                )
    return 0


def _db(value) -> str:
    """A PSNR for the summary line: the unprotected image's is infinite (no change) or
    absent (``resized``: published at the view, not compared with the original)."""
    if value is None:
        return "not measured"
    if not math.isfinite(value):
        return "inf (unchanged)"
    return f"{value:.2f} dB"


def _disruption(rows: dict, key: tuple) -> float:
    """The decode disruption of one row, or LookupError saying which is missing or not a
    number (a NaN would otherwise turn every mean it enters into NaN without a word)."""
    method, transform, view, image = key
    if key not in rows:
        raise LookupError(f"no {method!r} row for {image}")
    value = rows[key].get("disruption_db")
    if value is None or not math.isfinite(value):
        raise LookupError(f"no finite disruption of {method!r} for {image}")
    return value


if __name__ == "__main__":
    sys.exit(main())
