"""The files a bench writes into its output directory: <name>.json (the whole report),
<name>.md (its table) and, where a curve says more, <name>.png."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def write_report(
    out: Path,
    name: str,
    report: dict,
    markdown: Callable[[dict], str],
    plot: Callable[[dict, Path], None] | None = None,
    indent: int = 1,
) -> str:
    """Write the report's files, print its table, and return the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=indent) + "\n")
    table = markdown(report)
    (out / f"{name}.md").write_text(table)
    if plot is not None:
        plot(report, out / f"{name}.png")
    print(table)
    print(f"wrote {out / name}.{{json,md{',png' if plot else ''}}}")
    return table
