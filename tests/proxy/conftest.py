from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def trained_once(tmp_path_factory) -> Path:
    """A two-step training run exported like the real one (weights are noise)."""
    from proxy_videoqa import train

    work = tmp_path_factory.mktemp("proxy-train")
    train.main(
        ["--work", str(work), "--export", str(work / "model"), "--steps", "2", "--batch", "2",
         "--checkpoint-every", "1", "--eval-every", "2", "--eval-per-split", "1"]
    )  # fmt: skip
    return work


def log_records(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
