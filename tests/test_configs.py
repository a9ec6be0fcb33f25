from pathlib import Path

import pytest
import yaml

from sharp_plugin.core import parse_settings

PRESETS = yaml.safe_load((Path(__file__).parents[1] / "configs" / "pruning-presets.yaml").read_text())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid_settings(name):
    settings = parse_settings(PRESETS[name])
    assert settings.method == PRESETS[name]["method"]


def test_ablations_switch_off_exactly_one_fix():
    full = parse_settings(PRESETS["sharp"])
    for name, field in [
        ("sharp-no-masking", "segment_frames"),
        ("sharp-no-debias", "debias"),
        ("sharp-no-dedup", "dedup_threshold"),
    ]:
        ablated = parse_settings(PRESETS[name])
        differing = {f for f in type(full).model_fields if getattr(full, f) != getattr(ablated, f)}
        assert differing == {field}, name
