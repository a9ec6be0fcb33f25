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
        ("sharp-local", "segment_mask"),
        ("sharp-no-debias", "debias"),
        ("sharp-question-prior", "prior_query"),
        ("sharp-no-dedup", "dedup_threshold"),
    ]:
        ablated = parse_settings(PRESETS[name])
        differing = {f for f in type(full).model_fields if getattr(full, f) != getattr(ablated, f)}
        assert differing == {field}, name


SERVER_CONFIGS = sorted(
    p for p in (Path(__file__).parents[1] / "configs").glob("*.yaml") if p.name != "pruning-presets.yaml"
)


@pytest.mark.parametrize("path", SERVER_CONFIGS, ids=lambda p: p.name)
def test_every_server_config_loads(path):
    from server.settings import ServerSettings

    settings = ServerSettings.from_yaml(path)
    assert settings.engine.model
    parse_settings(settings.sharp)


def test_there_is_a_default_and_a_gpu_config():
    assert {p.name for p in SERVER_CONFIGS} >= {"default.yaml", "gpu-qwen25vl-7b.yaml"}
