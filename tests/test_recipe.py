"""The one engine recipe (sharp_plugin/recipe.py): what a ShaRP engine is built with, the
stock `vllm serve` line the README prints from it, and its command line."""

import json
import re
import shlex
import subprocess
import sys

from sharp_plugin import recipe

from .conftest import REPO

ARCH = "SharpQwen2_5_VLForConditionalGeneration"


def test_a_sharp_engine_has_the_architecture_the_worker_extension_and_the_scheduler(tiny_model_dir):
    args = recipe.engine_args(
        tiny_model_dir, sharp_defaults={"retention": 0.5}, sharp_config={"sharp_vision_cache_mb": 0}
    )
    assert args["hf_overrides"] == {
        "architectures": [ARCH],
        "sharp_defaults": {"retention": 0.5},
        "sharp_vision_cache_mb": 0,
    }
    assert args["worker_extension_cls"] == "sharp_plugin.vllm.reports.SharpWorkerExtension"
    assert args["scheduler_cls"] == "sharp_plugin.vllm.scheduler.SharpScheduler"
    stock = recipe.engine_args(tiny_model_dir, sharp=False, dtype="float32")
    assert stock == {"model": str(tiny_model_dir), "hf_overrides": {"architectures": [
        "Qwen2_5_VLForConditionalGeneration"]}, "dtype": "float32"}  # fmt: skip


def test_the_proxy_model_served_stock_gets_the_stock_class(proxy_model_dir):
    """Its checkpoint names the ShaRP class; the stock arm of a bench needs the stock one."""
    assert recipe.checkpoint_architecture(proxy_model_dir) == ARCH
    assert recipe.engine_args(proxy_model_dir, sharp=False)["hf_overrides"]["architectures"] == [
        "Qwen2_5_VLForConditionalGeneration"
    ]


def test_the_readme_prints_the_recipes_vllm_serve_line():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- recipe: vllm serve -->\n```bash\n(.*?)\n```\n<!-- /recipe -->", readme, re.S)
    assert block, "the README's recipe block is missing"
    line = block.group(1)
    assert line == recipe.vllm_serve_line(
        recipe.engine_args("Qwen/Qwen2.5-VL-7B-Instruct", architecture=ARCH)
    )
    words = shlex.split(line)
    assert words[0] == "VLLM_USE_V2_MODEL_RUNNER=0" and words[1:3] == ["vllm", "serve"]
    overrides = json.loads(words[words.index("--hf-overrides") + 1])
    assert overrides == {"architectures": [ARCH]} and "--trust-request-mm-kwargs" in words
    # The command line that prints it (the README's first line of that section).
    printed = subprocess.run(
        [sys.executable, "-m", "sharp_plugin.recipe", "--architecture", ARCH, "Qwen/Qwen2.5-VL-7B-Instruct"],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout.strip()  # fmt: skip
    assert printed == line


def test_extra_serve_flags_follow_the_recipes(tiny_model_dir):
    command = recipe.vllm_serve_command(
        recipe.engine_args(tiny_model_dir, max_model_len=4096), ["--port", "9"]
    )
    assert command[:3] == ["vllm", "serve", str(tiny_model_dir)]
    assert command[-2:] == ["--port", "9"] and command[command.index("--max-model-len") + 1] == "4096"
