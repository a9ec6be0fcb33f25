"""The server picks the ShaRP class from the architecture a model's config.json names."""

import json

import pytest

from server.engine import sharp_architecture


def test_a_stock_checkpoint_gets_its_sharp_class(tiny_model_dir):
    assert json.loads((tiny_model_dir / "config.json").read_text())["architectures"] == [
        "Qwen2_5_VLForConditionalGeneration"
    ]
    assert sharp_architecture(str(tiny_model_dir)) == "SharpQwen2_5_VLForConditionalGeneration"


def test_a_checkpoint_that_names_a_sharp_class_keeps_it(default_model):
    assert sharp_architecture(str(default_model)) == "SharpQwen2_5_VLForConditionalGeneration"


def test_an_unsupported_family_is_refused_by_name(tmp_path):
    config = {"architectures": ["LlavaOnevisionForConditionalGeneration"], "model_type": "llava_onevision"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"engine\.model: .* is a LlavaOnevisionForConditionalGeneration; ShaRP serves"
    ):
        sharp_architecture(str(tmp_path))
