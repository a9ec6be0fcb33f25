"""Where a bench's results go and what they record.

Every result file carries its provenance: the commit, the vLLM and torch versions, the
cores, the date, the exact command, and the source paths the bench measures, so that
`python -m bench.report` can tell a result whose sources changed after it was made.
`--out` is always a directory; `--small` (a bench's CI mode) writes under runs/."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--small", action="store_true", help="CI mode: a few cases, results under runs/")


def output_dir(args: argparse.Namespace, bench: str) -> Path:
    """`--out`, else runs/<bench>-small for `--small`, else bench/results."""
    out = args.out or (REPO / "runs" / f"{bench}-small" if args.small else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    return out


def provenance(sources: Sequence[str]) -> dict[str, Any]:
    """Where a result comes from. `sources`: the repository paths (files or directories)
    whose code the bench measures."""

    def git(*command: str) -> str:
        run = subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True)
        return run.stdout.strip() if run.returncode == 0 else ""

    versions = {}
    for package in ("vllm", "torch"):
        try:
            versions[package] = __import__(package).__version__
        except ImportError:
            versions[package] = None
    return {
        "commit": git("rev-parse", "HEAD"),
        # Uncommitted changes under the measured sources: the commit alone does not say
        # what ran.
        "dirty": bool(git("status", "--porcelain", "--", *sources)),
        **versions,
        "cores": os.cpu_count(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        + ("CUDA " + _gpu_name() if _has_cuda() else "no GPU"),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, "-m", _module_name(), *sys.argv[1:]]),
        "sources": list(sources),
    }


def write_report(
    out: Path,
    name: str,
    report: dict,
    markdown: Callable[[dict], str],
    plot: Callable[[dict, Path], None] | None = None,
    *,
    sources: Sequence[str],
    indent: int = 1,
) -> str:
    """Write <name>.json (the report with its provenance), <name>.md (its table) and,
    where a curve says more, <name>.png; print the table and return it."""
    out.mkdir(parents=True, exist_ok=True)
    report = {"provenance": provenance(sources), **report}
    (out / f"{name}.json").write_text(json.dumps(report, indent=indent) + "\n")
    table = markdown(report)
    (out / f"{name}.md").write_text(table)
    if plot is not None:
        plot(report, out / f"{name}.png")
    print(table)
    print(f"wrote {out / name}.{{json,md{',png' if plot else ''}}}")
    return table


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else Path(sys.argv[0]).name


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)
