"""Join the results of an evaluation run in shards (``evaluate --shard I/N``) into one.

    python tools/merge_results.py runs/s1of5/results.json runs/s2of5/results.json --out DIR
    python tools/merge_results.py docs/data/purify512_split/*.json.gz --out runs/split_so_far

A long evaluation (per-image PGD on the whole validation split takes hours on a CPU) can
be run as N shards, on several machines or in several sessions, each shard every N-th
image. This checks that the inputs are finished shards of one run: the same selection of
images (count and digest), models (weight digests), code versions and settings, but the
shard and what only describes its run (command, threads, device), no image in two of
them, no shard twice, each shard whole. It writes ``results.json`` and ``results.csv``
in the format ``evaluate`` writes, the images in the order of the whole run, so
``tools/paired.py``, ``tools/purification_table.py`` and ``tools/report.py`` read it.
``settings.shards`` names the shards joined, those missing and the device of each (a
GPU's numbers differ from a CPU's in the last digits); where any shard is missing the
result is a sample of the run and ``settings.partial`` says how many of how many images.
Inputs may be gzipped (``.json.gz``), as the results kept in the repository are; the
other tools read only plain ``results.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import zlib
from pathlib import Path

from fastprotect.eval.run import EvaluationError, summarise, table, write_results

# settings that describe one shard's run, not what its rows measure ("data": where the
# images lay on its machine; the selection's digest, compared, does not depend on it)
_PER_RUN = (
    "images",
    "shard",
    "command",
    "resumed_images",
    "torch_threads",
    "device",
    "device_name",
    "data",
    "skipped_files",
    "attack_cache",
)


def _load(path: Path) -> dict:
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip, whatever the name
            raw = gzip.decompress(raw)
        doc = json.loads(raw)
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise EvaluationError(f"{path}: not a readable results.json ({e})") from None
    if not isinstance(doc, dict) or "settings" not in doc or "rows" not in doc:
        raise EvaluationError(f"{path}: not a results.json of fastprotect evaluate")
    return doc


def _check_shard(path: Path, s: dict) -> tuple[int, int]:
    if "partial" in s:
        raise EvaluationError(
            f"{path} holds only part of a run (read from an unfinished run's journal or "
            "merged from some shards); finish the shard with evaluate --resume and pass its "
            "results.json"
        )
    if "shards" in s:
        raise EvaluationError(
            f"{path} is already a merge of shards {s['shards'].get('joined')}; pass the "
            "shards' own results"
        )
    if "shard" not in s or "selection" not in s:
        raise EvaluationError(f"{path} is not a shard: it was not run with --shard I/N")
    i, n = s["shard"]
    return i, n


def merge(docs: list[tuple[Path, dict]]) -> tuple[list[dict], dict]:
    """The rows of all shards in the whole run's order (shard i's k-th image, counting from
    0, is the run's image kN + i - 1) and the joined settings."""
    first_path, first = docs[0]
    _check_shard(first_path, first["settings"])
    common = {k: v for k, v in first["settings"].items() if k not in _PER_RUN}
    n = first["settings"]["shard"][1]
    total = common["selection"]["images"]
    by_shard: dict[int, tuple[Path, dict]] = {}
    for path, doc in docs:
        s = doc["settings"]
        i, sn = _check_shard(path, s)
        if sn != n:
            raise EvaluationError(f"{path} is shard {i}/{sn}, {first_path} one of {n} shards")
        if i in by_shard:
            raise EvaluationError(f"shard {i}/{n} is given twice: {by_shard[i][0]} and {path}")
        differ = sorted(
            k
            for k in {*common, *s}
            if k not in _PER_RUN and common.get(k, "<absent>") != s.get(k, "<absent>")
        )
        if differ:
            raise EvaluationError(
                f"{path} and {first_path} are not shards of one run: their settings differ "
                f"in {', '.join(differ)}"
            )
        want = len(range(i - 1, total, n)) - len(s.get("skipped_files", []))
        if s["images"] != want:
            raise EvaluationError(
                f"{path} holds {s['images']} images; shard {i}/{n} of {total} holds {want}"
            )
        by_shard[i] = (path, doc)
    shard_of: dict[str, int] = {}  # image -> its shard
    rows_of: dict[str, list[dict]] = {}
    ordered: list[list[str]] = []  # each shard's images in its order
    for i in sorted(by_shard):
        names = []
        for r in by_shard[i][1]["rows"]:
            name = r["image"]
            if shard_of.setdefault(name, i) != i:
                raise EvaluationError(
                    f"{name} is in shard {shard_of[name]} and in shard {i}: not shards of one run"
                )
            if name not in rows_of:
                names.append(name)
            rows_of.setdefault(name, []).append(r)
        ordered.append(names)
    # interleave: the run's order is shard 1's first image, shard 2's first, ...
    run_order = [
        names[k] for k in range(max(map(len, ordered))) for names in ordered if k < len(names)
    ]
    rows = [r for name in run_order for r in rows_of[name]]
    # a shard that would hold no image (more shards than images) cannot be run: not missing
    missing = [i for i in range(1, n + 1) if i not in by_shard and i <= total]
    devices = [by_shard[i][1]["settings"].get("device") for i in sorted(by_shard)]
    settings = {**common, "images": len(run_order)}
    settings["data"] = by_shard[min(by_shard)][1]["settings"].get("data")
    skipped = [
        f for i in sorted(by_shard) for f in by_shard[i][1]["settings"].get("skipped_files", [])
    ]
    if skipped:
        settings["skipped_files"] = skipped
    settings["device"] = devices[0] if len(set(devices)) == 1 else "mixed (see shards)"
    settings["shards"] = {
        "of": n,
        "joined": sorted(by_shard),
        "missing": missing,
        "devices": devices,
        "commands": [by_shard[i][1]["settings"].get("command") for i in sorted(by_shard)],
        "data": [by_shard[i][1]["settings"].get("data") for i in sorted(by_shard)],
        "seconds_from": "each shard's own run",
    }
    settings["command"] = "python tools/merge_results.py " + " ".join(
        str(by_shard[i][0]) for i in sorted(by_shard)
    )
    if missing:
        settings["partial"] = {
            "measured": len(run_order),
            "of": total,
            "shards_missing": missing,
            "images": run_order,
        }
    return rows, settings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, nargs="+", help="results.json (or .json.gz) of shards")
    ap.add_argument("--out", type=Path, required=True, help="folder for results.json/.csv")
    args = ap.parse_args()
    try:
        rows, settings = merge([(p, _load(p)) for p in args.results])
        settings["command"] += f" --out {args.out}"
        written = write_results(args.out, rows, settings)
    except EvaluationError as e:
        print(f"merge_results: error: {e}", file=sys.stderr)
        return 2
    summary = summarise(rows)
    domains = ["all", *sorted({e["domain"] for e in summary} - {"all"})]
    print(table(summary, transforms=settings["transforms"], domains=domains))
    sh = settings["shards"]
    left = f"; missing {sh['missing']}" if sh["missing"] else " (all)"
    total = settings["selection"]["images"]
    print(
        f"\n{settings['images']} of {total} images from shards {sh['joined']} of {sh['of']}"
        f"{left}; wrote {written[0]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
