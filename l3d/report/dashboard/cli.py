"""`python -m l3d.report.dashboard RUN_DIR`: render a run's dashboard again from its saved data, no model needed."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .page import render


def main(argv: Sequence[str] | None = None) -> Path:
    """Command line: re-render RUN_DIR's dashboard from its saved data."""
    parser = argparse.ArgumentParser(prog="python -m l3d.report.dashboard", description=main.__doc__)
    parser.add_argument("run_dir", help="a dashboard folder (holding data.json), or a folder whose dashboard/ holds it")
    run_dir = parser.parse_args(argv).run_dir
    from safetensors import SafetensorError

    try:
        path = render(run_dir)
    except (ValueError, OSError, SafetensorError) as e:   # missing or damaged saved data: one line, no traceback
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(e).split())}\n")
    print(path)
    return path
