"""The one way tests build engines: `make_llm` through the project's recipe
(sharp_plugin.recipe), and `engine_fixture`, which makes a fixture of one. Engines are
expensive (20-60 s each on CPU), so fixtures are package- or module-scoped and shut down
when their scope ends, so that later packages (each with engines of their own) do not run
beside them on a 24 GiB machine."""

from __future__ import annotations

import gc
import os

import pytest

from sharp_plugin import recipe


def make_llm(model_dir, *, sharp: bool = True, dtype: str = "bfloat16", **engine_args):
    """The tests' engine: eager, prefix caching on, two videos and an image per prompt,
    seeded; `engine_args` (EngineArgs fields, or the recipe's own `architecture`,
    `sharp_defaults` and `sharp_config`) win."""
    # scripts/gpu_smoke.sh runs the engine tests again with tensor parallelism on a host
    # with two GPUs; everywhere else one device.
    defaults = {
        "tensor_parallel_size": int(os.environ.get("SHARP_TEST_TENSOR_PARALLEL", "1")),
        "max_model_len": 4096,
        "max_num_seqs": 8,
        "enforce_eager": True,
        "enable_prefix_caching": True,
        "limit_mm_per_prompt": {"video": 2, "image": 1},
        "seed": 0,
    }
    return recipe.build_llm(str(model_dir), sharp=sharp, dtype=dtype, **{**defaults, **engine_args})


def shutdown(llm) -> None:
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


def engine_fixture(model_fixture: str, *, scope: str = "package", **llm_kwargs):
    """A fixture of `make_llm(<the model_fixture's directory>, **llm_kwargs)`."""

    @pytest.fixture(scope=scope)
    def engine(request):
        llm = make_llm(request.getfixturevalue(model_fixture), **llm_kwargs)
        yield llm
        shutdown(llm)

    return engine
