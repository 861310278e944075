"""Results of the images an unfinished ``fastprotect evaluate --resume`` run has measured.

    python tools/journal_results.py runs/x/partial.jsonl --out runs/x_so_far

A long run (per-image PGD on the whole validation split takes hours on a CPU) keeps each
finished image's rows in ``OUT/partial.jsonl``. This reads that journal, while the run
goes on or after it was stopped, and writes ``results.json`` and ``results.csv`` in the
format ``evaluate`` writes, so ``tools/paired.py``, ``tools/purification_table.py`` and
``tools/report.py`` read them. The images are the ones measured so far, in the run's
order; ``settings.partial`` says how many of how many, and which, so a number taken from
the file cannot pass for the whole run's. Prints the same table ``evaluate`` prints. The
journal is only read: the run can still be resumed. ``--out`` must not be the run's own
folder, where a ``results.json`` would stop the run from finishing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastprotect.eval.journal import JournalError, journalled_names, read_journal
from fastprotect.eval.run import EvaluationError, summarise, table, write_results

# in the journal's key but not settings of a results.json: the images by path (the rows
# name their images) and the caller's extras (kept under ``partial``); the model digests
# and the versions are settings (journals older than that keep them in the key alone)
_KEY_ONLY = ("files", "method_specs", "eta", "pgd_step_size")


def partial_results(journal: Path) -> tuple[list[dict], dict]:
    """The rows measured so far, in the run's image order, and their settings."""
    key, done = read_journal(journal)
    files = key.get("files", [])
    names = journalled_names(files, done)
    measured = [f for f in files if f in names]
    if len(measured) < len(done):
        raise EvaluationError(
            f"{journal}: {len(done) - len(measured)} of its journalled images are not among "
            "the run's images"
        )
    if not measured:
        raise EvaluationError(f"{journal} holds no measured image yet")
    rows = [r for f in measured for r in done[names[f]]]
    settings = {k: v for k, v in key.items() if k not in _KEY_ONLY}
    settings["images"] = len(measured)
    # the journal does not keep the command line; the tools that print it say this instead
    settings["command"] = (
        f"python tools/journal_results.py {journal} ({len(measured)} of the {len(files)} "
        "images of an unfinished evaluate run)"
    )
    settings["partial"] = {
        "journal": str(journal),
        "measured": len(measured),
        "of": len(files),
        "images": [names[f] for f in measured],
        **{k: key[k] for k in _KEY_ONLY if k in key and k != "files"},
    }
    return rows, settings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("journal", type=Path, help="OUT/partial.jsonl of an evaluate run")
    ap.add_argument("--out", type=Path, required=True, help="folder for results.json/.csv")
    args = ap.parse_args()
    try:
        if args.out.resolve() == args.journal.resolve().parent:
            raise EvaluationError(
                f"--out {args.out} is the run's own folder: its results.json would stop the "
                "run from finishing or resuming; choose another folder"
            )
        rows, settings = partial_results(args.journal)
        written = write_results(args.out, rows, settings)
    except (JournalError, EvaluationError) as e:
        print(f"journal_results: error: {e}", file=sys.stderr)
        return 2
    summary = summarise(rows)
    domains = ["all", *sorted({e["domain"] for e in summary} - {"all"})]
    print(table(summary, transforms=settings["transforms"], domains=domains))
    p = settings["partial"]
    print(f"\n{p['measured']} of {p['of']} images measured so far; wrote {written[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
