"""CI mode of bench/scoring_scaling.py: under the segment-local mask the scoring pass's
time and peak extra memory at 4N are at most 4.5x those at N (8k -> 32k tokens: linear,
with a margin for a busy machine), while the block-causal pass's time grows faster than
that from 4k to 16k already (its N^2 term)."""

import json

from .conftest import run_small_bench


def test_the_segment_local_pass_is_linear_in_the_video_length(tmp_path):
    run = run_small_bench("scoring_scaling", tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "scoring_scaling.json").read_text())
    rows = {(r["mask"], r["tokens"]): r for r in report["rows"]}
    local_n, local_4n = rows["local", 8192], rows["local", 32768]
    assert local_4n["seconds"] <= 4.5 * local_n["seconds"], (local_n, local_4n)
    assert local_4n["peak_extra_mib"] <= 4.5 * local_n["peak_extra_mib"], (local_n, local_4n)
    block_n, block_4n = rows["block_causal", 4096], rows["block_causal", 16384]
    assert block_4n["seconds"] > 4.5 * block_n["seconds"], (block_n, block_4n)
    # At 16k the block-causal pass already costs more than the local one at twice the N.
    assert block_4n["seconds"] > local_n["seconds"]
    assert (tmp_path / "scoring_scaling.png").stat().st_size > 10_000
