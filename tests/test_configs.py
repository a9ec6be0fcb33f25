from pathlib import Path

import pytest
import yaml

from sharp_plugin.core import parse_settings

PRESETS = yaml.safe_load((Path(__file__).parents[1] / "configs" / "pruning-presets.yaml").read_text())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid_settings_and_says_whether_it_skips_static_groups(name):
    settings = parse_settings(PRESETS[name])
    assert settings.method == PRESETS[name]["method"]
    # An engine-wide skip_static default must not change what a preset name means.
    assert (
        parse_settings(PRESETS[name], {"skip_static": not settings.skip_static}).skip_static
        == settings.skip_static
    )


def test_ablations_switch_off_exactly_one_fix():
    full = parse_settings(PRESETS["sharp"])
    for name, field in [
        ("sharp-no-masking", "segment_frames"),
        ("sharp-local", "segment_mask"),
        ("sharp-segments", "budget_spread"),
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


def test_the_long_video_config_reserves_its_longest_video_in_the_engine():
    """The server's cap on unpruned tokens becomes the engine's `sharp_max_video_tokens`:
    its memory profile reserves that video's scoring pass, and it refuses longer ones."""
    from server.engine import server_engine_args
    from server.settings import ServerSettings

    long = ServerSettings.from_yaml(Path(__file__).parents[1] / "configs" / "gpu-qwen25vl-7b-long.yaml")
    # The architecture named, so that its config is not read from the hub.
    arch = {"architecture": "SharpQwen2_5_VLForConditionalGeneration"}
    long = long.model_copy(update={"engine": long.engine.model_copy(update=arch)})
    overrides = server_engine_args(long)["hf_overrides"]
    assert overrides["sharp_max_video_tokens"] == long.media.max_video_tokens == 480000
    assert overrides["sharp_defaults"] == long.sharp
    default = ServerSettings.from_yaml(Path(__file__).parents[1] / "configs" / "default.yaml")
    assert "sharp_max_video_tokens" not in server_engine_args(default)["hf_overrides"]  # no cap: no limit
