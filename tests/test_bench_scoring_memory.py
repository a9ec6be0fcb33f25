"""CI mode of bench/scoring_memory.py: the peak extra memory of one ShaRP selection (the
scoring pass with the mean prior, dedup and top-k) per token and hidden unit, measured in
fresh processes at two widths.

What persists across a layer of the pass is the residual stream, the layer's output and
Q ([L, D] each, bf16) plus K and V: about 7 bytes per token per hidden unit; at 8k
tokens the bounded blocks of rows add to that (11.5 measured). The bound catches a pass
that holds a second set: one that makes the next layer's Q, K and V while the last
layer's are alive, or runs the prior's pass while the video's own hidden states are
held, measures 15.5."""

import json

from .conftest import run_small_bench

BYTES_PER_TOKEN_PER_HIDDEN_UNIT = 13.5


def test_one_selection_holds_about_three_hidden_states_per_token(tmp_path):
    run = run_small_bench("scoring_memory", tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "scoring_memory.json").read_text())
    sharp = report["scaled_to_hidden_3584"]["sharp"]
    assert 0 < sharp["bytes_per_token_per_hidden_unit"] <= BYTES_PER_TOKEN_PER_HIDDEN_UNIT, report["rows"]
