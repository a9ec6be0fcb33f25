"""Registration through vLLM's own plugin machinery (no engine needed)."""

from importlib.metadata import entry_points

import pytest

import sharp_plugin
from sharp_plugin.vllm import patches

from .conftest import SHARP_ARCH


def test_entry_point_is_declared_for_vllm():
    plugins = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert plugins.get("sharp") == "sharp_plugin:register"


def test_vllm_plugin_loader_registers_the_architecture_lazily():
    from vllm import ModelRegistry
    from vllm.plugins import load_general_plugins

    load_general_plugins()
    sharp_plugin.register()  # re-entrant
    assert SHARP_ARCH in ModelRegistry.get_supported_archs()
    model_cls = ModelRegistry._try_load_model_cls(SHARP_ARCH)  # vLLM's own lazy load
    from vllm.model_executor.models.interfaces import supports_multimodal_pruning
    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration

    assert supports_multimodal_pruning(model_cls)
    assert issubclass(model_cls, Qwen2_5_VLForConditionalGeneration)


def test_patches_are_the_platforms_and_installed_once():
    from vllm.platforms import current_platform
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    sharp_plugin.register()
    patched = GPUModelRunner._execute_mm_encoder
    # The CPU runner's missing pruning flag is the CPU platform's alone (docs/patches.md 1).
    expected = ["cpu_runner_pruning_flag"] if current_platform.is_cpu() else []
    assert patches.apply_patches() == [*expected, "batched_video_encoding"]
    assert GPUModelRunner._execute_mm_encoder is patched, "a second install must not wrap twice"
    if current_platform.is_cpu():
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner

        patched_load = CPUModelRunner.load_model
        patches.apply_patches()
        assert CPUModelRunner.load_model is patched_load


def test_other_vllm_minors_are_refused(monkeypatch):
    import vllm

    monkeypatch.setattr(vllm, "__version__", "0.33.1")
    with pytest.raises(RuntimeError, match=r"supports vLLM 0\.32\.x, found 0\.33"):
        patches.check_vllm_version()


def test_the_encoder_reads_the_pruning_flag_only_to_split_videos():
    """The batched-video-encoding patch turns the flag off while `_execute_mm_encoder`
    runs (docs/patches.md, entry 2). That is only safe while the method reads the flag
    for the one-video-per-call choice and nothing else."""
    import inspect
    import re

    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    sharp_plugin.register()
    source = inspect.getsource(inspect.unwrap(GPUModelRunner._execute_mm_encoder))
    reads = [m.start() for m in re.finditer(r"is_multimodal_pruning_enabled", source)]
    assert len(reads) == 1, f"the flag is read {len(reads)} times"
    branch = source[reads[0] : source.index("batch_outputs_lst", reads[0])]
    assert 'modality == "video"' in branch and "num_items > 1" in branch


def test_the_pruning_path_is_switched_on_and_encoder_cuda_graphs_off(tiny_qwen3_dir):
    """Encoder CUDA graphs would replay the tower instead of embed_multimodal (no
    selection while the placeholders expect the kept count): a ShaRP model turns them
    off, and turns on vLLM's pruning path, while it is built."""
    from vllm.config import CompilationConfig, ModelConfig, VllmConfig

    from sharp_plugin.vllm.model import enable_pruning_path

    config = VllmConfig(
        model_config=ModelConfig(model=str(tiny_qwen3_dir)),
        compilation_config=CompilationConfig(cudagraph_mm_encoder=True),
    )
    assert not config.model_config.multimodal_config.is_multimodal_pruning_enabled()
    assert config.compilation_config.cudagraph_mm_encoder is True
    enable_pruning_path(config)
    assert config.model_config.multimodal_config.is_multimodal_pruning_enabled()
    assert config.compilation_config.cudagraph_mm_encoder is False


def test_every_registered_family_implements_every_hook():
    """The family interface (sharp_plugin/vllm/family.py) is complete for every class the
    plugin registers, and an incomplete family cannot be built."""
    import importlib

    from sharp_plugin.vllm.family import SharpModelFamily, SharpProcessorFamily

    for target in sharp_plugin.ARCHITECTURES.values():
        module, name = target.split(":")
        model_cls = getattr(importlib.import_module(module), name)
        processor_cls = (
            model_cls._processor_factory.processor
        )  # set by MULTIMODAL_REGISTRY.register_processor
        assert issubclass(model_cls, SharpModelFamily) and not model_cls.__abstractmethods__, name
        assert issubclass(processor_cls, SharpProcessorFamily) and not processor_cls.__abstractmethods__, name

    class Incomplete(SharpModelFamily):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()
