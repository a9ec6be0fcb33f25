"""The figures the READMEs quote, generated from the committed results, and which results
are stale.

    python -m bench.report            # rewrite every marked figure; list stale results
    python -m bench.report --check    # fail if a marked figure differs from its result (CI)
    python -m bench.report --stale    # fail if a result predates a change to its sources

A figure is a block of README.md or bench/README.md between `<!-- figure: NAME -->` and
`<!-- /figure -->`; `bench/figures.py` renders each from result files in bench/results/. So
no speed or quality number in those READMEs is typed by hand.

A result is stale when a commit after the one it was made at changed one of the sources
it measures (its provenance's `sources`), when it was made from uncommitted sources, or
when it has no provenance at all.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

from bench.common.results import REPO, RESULTS
from bench.figures import FIGURES, MissingResult

DOCUMENTS = (REPO / "README.md", REPO / "bench" / "README.md")
BLOCK = re.compile(r"(<!-- figure: ([\w-]+) -->\n)(.*?)(<!-- /figure -->)", re.S)


def render_blocks(text: str) -> tuple[str, list[str]]:
    """The document with every marked block re-rendered, and what could not be: unknown
    figures and missing results."""
    problems: list[str] = []

    def replace(match: re.Match) -> str:
        opening, name, _, closing = match.groups()
        if name not in FIGURES:
            problems.append(f"no renderer for figure {name!r}")
            return match.group(0)
        try:
            return f"{opening}{FIGURES[name]().rstrip()}\n{closing}"
        except MissingResult as missing:
            problems.append(f"figure {name!r}: {missing}")
            return match.group(0)

    return BLOCK.sub(replace, text), problems


def stale_results() -> list[str]:
    """Each result under bench/results/ that its sources have moved past, with why."""
    stale = []
    for path in sorted(RESULTS.rglob("*.json")):
        try:
            provenance = json.loads(path.read_text()).get("provenance")
        except (json.JSONDecodeError, AttributeError):
            provenance = None
        name = str(path.relative_to(REPO))
        if not isinstance(provenance, dict) or not provenance.get("commit"):
            stale.append(f"{name}: no provenance")
            continue
        if provenance.get("dirty"):
            stale.append(f"{name}: made from uncommitted sources")
            continue
        later = _git("log", "--format=%h %s", f"{provenance['commit']}..HEAD", "--", *provenance["sources"])
        if later:
            first = later.splitlines()[-1]
            stale.append(f"{name}: its sources changed after {provenance['commit'][:8]} (first: {first})")
    return stale


def _git(*command: str) -> str:
    run = subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True)
    return run.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a marked figure is out of date")
    parser.add_argument("--stale", action="store_true", help="fail if any result is stale")
    args = parser.parse_args(argv)
    failed = False
    for document in DOCUMENTS:
        text = document.read_text()
        rendered, problems = render_blocks(text)
        for problem in problems:
            print(f"{document.relative_to(REPO)}: {problem}")
            failed = True
        if rendered != text:
            if args.check:
                print(f"{document.relative_to(REPO)}: marked figures differ from their results")
                failed = True
            else:
                document.write_text(rendered)
                print(f"rewrote the figures of {document.relative_to(REPO)}")
    stale = stale_results()
    for line in stale:
        print(f"stale: {line}")
    if not stale:
        print("no stale results")
    return 1 if failed or (args.stale and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
