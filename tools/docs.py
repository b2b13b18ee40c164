"""Every number in docs/ and in README.md's results table, written from figures/*/metrics.json and
benchmarks/results/*.json, never typed by hand: `make docs`, also the last step of `make figures`.

    python tools/docs.py              # write what changed: the generated regions of README.md and docs/*.md,
                                      # docs/results.md and docs/performance.md whole
    python tools/docs.py --check      # write nothing; name each file `make docs` would change (exit status 1 if any)
    python tools/docs.py --root DIR   # another checkout (the tests regenerate a copy)

Where the numbers come from, each in one place:
- which numbers of a notebook are its headline numbers, and how far each may move on another machine:
  l3d/report/tolerances.py (TOLERANCES[notebook]["paper"], patterns of key paths into its metrics.json);
- the paper's, the authors' code's, APD's and SPD's numbers: l3d/experiments/published.py, set beside ours only
  where the run's settings (metrics.json's "settings") are those the numbers were measured in; otherwise the
  table says which settings differ;
- ours: figures/<notebook>/metrics.json, as the notebook wrote it.
This tool only decides how they are shown. README_ROWS (docs_readme.py) picks which headline numbers the
README's one table shows for each notebook (a notebook without an entry shows its first two), each with the
published numbers that go beside it.

Generated regions: in README.md and docs/*.md, whatever lies between `<!-- generated: KIND ARGS -->` and
`<!-- end -->` is written by this tool (edit the tool, or the prose around the markers, never the inside).
Block kinds, on lines of their own:
    results                     the README's table: one row per notebook, published numbers against ours
    field                       notebook 07: per benchmark setting, APD and SPD against L3D
Inline kinds, inside a sentence (NB: a notebook's name; PATH: a key path into its metrics.json, keys joined by
"/", as in headlines.py):
    value NB PATH               the number                                  0.904
    spread NB PATH              the median and its range over seeds         0.904 (0.850–0.949)
    seeds NB PATH               one number per seed, in seed order          0.949 / 0.904 / 0.850
    count NB PATH               a count with what it counts out of          3 of 3
    published NB SOURCE NAME    a number of l3d.experiments.published       0.92
    benchmark FILE PATH         a value of benchmarks/results/FILE.json     31.5
A number the files do not hold is written "—" and named on stderr; that never stops the tool (exit status 0).
An unknown kind or wrong arguments stop it before anything is written (exit status 2).

The tool's parts, each a module beside this one, in the order they build on each other:
    docs_sources.py             reading metrics.json and the notebooks; which key paths are headline numbers
    docs_seeds.py               the per-seed rows a median over seeds summarizes, its range, a count's total
    docs_show.py                how a number is shown (decimals, range, per seed, "k of n"), its label, tables
    docs_readme.py              the block regions: the README's table (README_ROWS) and notebook 07's
    docs_results.py             docs/results.md
    docs_performance.py         docs/performance.md
    docs.py                     the generated regions and the command line (this file)

Deterministic: the same files give the same bytes (no dates, no absolute paths, metrics.json's key order kept).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from l3d.experiments import published

sys.path.insert(0, str(Path(__file__).resolve().parent))   # its parts beside it, also when loaded by path (the tests)

from docs_performance import performance_page  # noqa: E402
from docs_readme import README_ROWS, Shown, field_table, published_cell, results_table  # noqa: E402
from docs_results import results_page  # noqa: E402
from docs_seeds import seed_values  # noqa: E402
from docs_show import (  # noqa: E402
    digits,
    fmt,
    label,
    published_digits,
    show_count,
    show_seeds,
    show_spread,
    show_value,
)
from docs_sources import DASH, MISSING, Notes, Sources, first_pattern  # noqa: E402

# what tests/test_docs.py reads as docs.<name>, where it is defined in one of the parts
__all__ = ["README_ROWS", "WHOLE_FILES", "Shown", "digits", "first_pattern", "fmt", "label", "main", "published_cell",
           "seed_values", "show_count", "show_seeds", "show_spread", "show_value"]

ROOT = Path(__file__).resolve().parents[1]
WHOLE_FILES = ("docs/results.md", "docs/performance.md")   # written whole; every other .md only in its regions
REGION = re.compile(r"<!-- generated: (?P<spec>[^>]*?) -->(?P<body>.*?)<!-- end -->", re.S)


# --- regions -------------------------------------------------------------------------------------
class SpecError(ValueError):
    """A generated region the tool does not know, or with the wrong arguments."""


def inline(sources: Sources, kind: str, args: list[str]) -> str:
    if kind == "published":
        if len(args) != 3:
            raise SpecError("published takes NB SOURCE NAME")
        notebook, source, name = args
        try:
            number = published.numbers(notebook, source).get(name, MISSING)
        except ValueError as err:
            raise SpecError(str(err)) from None
        if number is MISSING:
            raise SpecError(f"{source} has no number {name!r} for {notebook}")
        return fmt(number, published_digits(number))
    if kind == "benchmark":
        if len(args) != 2:
            raise SpecError("benchmark takes FILE PATH")
        return benchmark_value(sources, *args)
    if len(args) != 2:
        raise SpecError(f"{kind} takes NB PATH")
    notebook, path = args
    metrics = sources.metrics(notebook)
    show = {"value": show_value, "spread": show_spread, "seeds": show_seeds, "count": show_count}[kind]
    text = show(metrics, path)
    if metrics is not None and text == DASH:
        sources.notes.add(f"{notebook}: metrics.json has no {kind} for {path} (shown as {DASH})")
    return text


def benchmark_value(sources: Sources, name: str, path: str) -> str:
    """The value at key path `path` of benchmarks/results/<name>.json, as the docs show it (text as it is)."""
    file = sources.root / "benchmarks" / "results" / f"{name}.json"
    value = json.loads(file.read_text()) if file.is_file() else MISSING
    for key in path.split("/"):
        value = value.get(key, MISSING) if isinstance(value, dict) else MISSING
    if value is MISSING:
        sources.notes.add(f"benchmarks/results/{name}.json has no {path} (shown as {DASH})")
    return fmt(value, 1)


BLOCKS: dict[str, Callable[[Sources], str]] = {"results": results_table, "field": field_table}
INLINE = ("value", "spread", "seeds", "count", "published", "benchmark")


def fill(text: str, sources: Sources, where: str) -> str:
    """`text` with every generated region written anew."""
    def replace(match: re.Match) -> str:
        kind, *args = match["spec"].split()
        if kind in BLOCKS and not args:
            body = f"\n\n{BLOCKS[kind](sources)}\n\n"   # blank lines: a table stays a block of its own
        elif kind in INLINE:
            try:
                body = inline(sources, kind, args)
            except SpecError as err:
                raise SpecError(f"{where}: <!-- generated: {match['spec']} -->: {err}") from None
        else:
            raise SpecError(f"{where}: <!-- generated: {match['spec']} -->: unknown kind or arguments; known: "
                            f"{', '.join(BLOCKS)} (no arguments), {', '.join(INLINE)}")
        return f"<!-- generated: {match['spec']} -->{body}<!-- end -->"

    return REGION.sub(replace, text)


def generate(root: Path = ROOT) -> tuple[dict[str, str], list[str]]:
    """{path relative to root: its new text} for every file the docs consist of, and the notes on what is missing."""
    notes = Notes()
    sources = Sources(root, notes)
    out = {"docs/results.md": results_page(sources), "docs/performance.md": performance_page(sources)}
    edited = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    for path in edited:
        relative = path.relative_to(root).as_posix()
        if relative in WHOLE_FILES or not path.is_file():
            continue
        out[relative] = fill(path.read_text(), sources, relative)
    return out, notes.lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to write (default: this one)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if make docs would change a file")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / "README.md").is_file():
        print(f"error: --root {args.root}: no README.md there (it must be a checkout of l3d)", file=sys.stderr)
        return 2
    try:
        files, notes = generate(root)
    except SpecError as err:
        print(f"error: {err}; nothing was written", file=sys.stderr)
        return 2
    for line in notes:
        print(f"docs: {line}", file=sys.stderr)
    changed = [name for name, text in files.items()
               if not (root / name).is_file() or (root / name).read_text() != text]
    if args.check:
        for name in changed:
            print(f"{name} differs from what make docs writes", file=sys.stderr)
        return 1 if changed else 0
    from l3d.runtime.atomic import write_file

    for name in changed:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_file(root / name, lambda p, text=files[name]: Path(p).write_text(text))
        print(f"wrote {name}")
    if not changed:
        print("docs: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
