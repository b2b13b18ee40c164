"""Writing a result table as CSV and as a markdown table."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..runtime.atomic import write_file


def markdown_table(rows: list[dict]) -> str:
    """The rows (dicts with the same keys) as a GitHub markdown table."""
    if not rows:
        return ""
    keys = list(rows[0])
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], out_dir: str | os.PathLike, name: str) -> str:
    """Write out_dir/name.csv and out_dir/name.md (each atomically); returns the markdown."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    markdown = markdown_table(rows)
    write_file(out_dir / f"{name}.csv", lambda f: Path(f).write_text(buffer.getvalue()))
    write_file(out_dir / f"{name}.md", lambda f: Path(f).write_text(markdown))
    return markdown
