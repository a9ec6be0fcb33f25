import json

import pytest

from sharp_plugin.core import SharpSettings, SharpSettingsError, parse_settings


def test_no_settings_means_no_pruning():
    settings = parse_settings(None)
    assert settings.method == "none"
    assert not settings.prunes


def test_settings_without_a_method_mean_sharp():
    settings = parse_settings({"retention": 0.25})
    assert (settings.method, settings.prunes) == ("sharp", True)
    assert parse_settings({}, {"retention": 0.5}).method == "sharp"


def test_request_values_win_over_engine_defaults():
    settings = parse_settings({"retention": 0.25}, {"method": "sharp", "retention": 0.5})
    assert (settings.method, settings.retention) == ("sharp", 0.25)


@pytest.mark.parametrize(
    "request_settings, field",
    [
        ({"retention": 0}, "retention"),
        ({"retention": 1.5}, "retention"),
        ({"retention": float("nan")}, "retention"),
        ({"method": "magic"}, "method"),
        ({"retention": "0.5"}, "retention"),
        ({"prune_layer": 1.5}, "prune_layer"),
        ({"prune_layer": True}, "prune_layer"),
        ({"debias": "white"}, "debias"),
        ({"dedup_threshold": 0}, "dedup_threshold"),
        ({"segment_frames": -1}, "segment_frames"),
        ({"colour": "red"}, "colour"),
        ({"method": "sharp", "oracle_tokens": [3]}, "oracle_tokens"),
        ({"method": "oracle", "oracle_tokens": [-1]}, "oracle_tokens.0"),
        ({"method": "oracle", "oracle_tokens": ["3"]}, "oracle_tokens.0"),
    ],
)
def test_invalid_settings_name_the_field(request_settings, field):
    with pytest.raises(SharpSettingsError) as info:
        parse_settings(request_settings)
    assert info.value.field == field
    assert str(info.value).startswith(f"sharp.{field}:")


def test_prune_layer_is_checked_against_the_model():
    with pytest.raises(SharpSettingsError, match=r"sharp\.prune_layer: .* 2 decoder layers"):
        parse_settings({"method": "sharp", "retention": 0.5, "prune_layer": 2}, num_decoder_layers=2)
    # A scoring method with a layer that does not exist is wrong even when nothing is pruned.
    with pytest.raises(SharpSettingsError, match=r"sharp\.prune_layer"):
        parse_settings({"method": "fastv", "retention": 1.0, "prune_layer": 5}, num_decoder_layers=2)
    # Methods without a scoring pass never use the layer, so it is not an error for them.
    parse_settings({"method": "uniform", "retention": 0.5, "prune_layer": 9}, num_decoder_layers=2)


def test_fastv_turns_off_the_three_fixes():
    effective = SharpSettings(method="fastv", retention=0.5).effective()
    assert (effective.segment_frames, effective.debias, effective.dedup_threshold) == (0, "off", 1.0)
    sharp = SharpSettings(method="sharp", retention=0.5)
    assert sharp.effective() == sharp


def test_integer_retention_is_a_valid_float():
    assert parse_settings({"retention": 1}).retention == 1.0


def test_pruning_rate_is_vllms_word_for_one_minus_retention():
    assert parse_settings({"pruning_rate": 0.75}).retention == 0.25
    # A request's pruning_rate wins over an engine default's retention.
    assert parse_settings({"pruning_rate": 0.5}, {"retention": 0.1}).retention == 0.5
    with pytest.raises(SharpSettingsError, match="not both") as info:
        parse_settings({"pruning_rate": 0.5, "retention": 0.5})
    assert info.value.field == "pruning_rate"
    with pytest.raises(SharpSettingsError, match="pruning_rate"):
        parse_settings({"pruning_rate": 1.0})


def test_oracle_tokens_survive_a_json_round_trip():
    settings = parse_settings({"method": "oracle", "retention": 0.1, "oracle_tokens": [7, 3]})
    assert settings.oracle_tokens == (7, 3)
    again = SharpSettings.model_validate(json.loads(settings.model_dump_json()))
    assert again == settings
