"""The one engine recipe: how every vLLM engine of this project is built.

`engine_args` gives the engine arguments of a model served with ShaRP (or, with
`sharp=False`, of the same checkpoint served stock, for side-by-side measurements).
Everything that builds an engine goes through it: the server (`build_async_llm`),
the tests and the in-process benches (`build_llm`), and the stock `vllm serve` command
(`vllm_serve_command`, which `make serve-vllm` runs and the README prints):

    python -m sharp_plugin.recipe MODEL [vllm serve flags...]          # print the command
    python -m sharp_plugin.recipe --exec MODEL [vllm serve flags...]   # run it

What a ShaRP engine needs besides its model:
- the ShaRP architecture (`hf_overrides`): the plugin's model class and processor;
- the worker extension: per-request reports through `collective_rpc`;
- the scheduler: the per-step encoder budget counts unpruned tokens
  (sharp_plugin/vllm/scheduler.py);
- the model runner pinned to V1, the one the tests run (docs/patches.md, entry 14),
  unless the environment already chose;
- for `vllm serve`, `--trust-request-mm-kwargs`, so that requests can carry `sharp`.
No vLLM import at module level: the server's settings and the CLI use it without vLLM.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Any

from sharp_plugin import ARCHITECTURES, SHARP_FOR_STOCK

WORKER_EXTENSION = "sharp_plugin.vllm.reports.SharpWorkerExtension"
SCHEDULER = "sharp_plugin.vllm.scheduler.SharpScheduler"
# The model runner the tests exercise. On a GPU with Triton vLLM 0.32 would pick Model
# Runner V2, whose pruning path the plugin has not been run through.
RUNNER_ENV = {"VLLM_USE_V2_MODEL_RUNNER": "0"}


def checkpoint_architecture(model: str) -> str:
    """The architecture a model's config.json names (a local directory or a hub id)."""
    from transformers import AutoConfig

    return (AutoConfig.from_pretrained(str(model)).architectures or ["(none)"])[0]


def sharp_architecture(model: str) -> str:
    """The ShaRP class for a model: the stock class's ShaRP counterpart, or the ShaRP class
    a checkpoint already names (the proxy model ships so). Refuses any other, by name."""
    named = checkpoint_architecture(model)
    if named in ARCHITECTURES:
        return named
    if named not in SHARP_FOR_STOCK:
        supported = ", ".join(sorted(SHARP_FOR_STOCK))
        raise ValueError(
            f"engine.model: {model} is a {named}; ShaRP serves {supported} "
            "(or set engine.architecture to a registered ShaRP class)"
        )
    return SHARP_FOR_STOCK[named]


def stock_architecture(model: str) -> str:
    """The stock class for a model, also when its checkpoint names a ShaRP class."""
    named = checkpoint_architecture(model)
    return {sharp: stock for stock, sharp in SHARP_FOR_STOCK.items()}.get(named, named)


def engine_args(
    model: str,
    *,
    sharp: bool = True,
    architecture: str | None = None,
    sharp_defaults: dict[str, Any] | None = None,
    sharp_config: dict[str, Any] | None = None,
    **engine: Any,
) -> dict[str, Any]:
    """vLLM EngineArgs fields for `model`. With `sharp`: the ShaRP architecture
    (`architecture`, or the one for the checkpoint), its engine-wide default settings
    (`sharp_defaults`), its other HF-config keys (`sharp_config`: `sharp_vision_cache_mb`,
    `sharp_max_video_tokens`, ...), the worker extension and the scheduler. Without: the
    checkpoint's stock architecture and nothing else of ours. `engine`: any other
    EngineArgs field, passed through."""
    if not sharp:
        overrides = {"architectures": [architecture or stock_architecture(model)]}
        return {"model": str(model), "hf_overrides": overrides, **engine}
    overrides: dict[str, Any] = {"architectures": [architecture or sharp_architecture(model)]}
    if sharp_defaults:
        overrides["sharp_defaults"] = dict(sharp_defaults)
    overrides.update(sharp_config or {})
    return {
        "model": str(model),
        "hf_overrides": overrides,
        "worker_extension_cls": WORKER_EXTENSION,
        "scheduler_cls": SCHEDULER,
        **engine,
    }


def pin_model_runner() -> None:
    """Set the runner pin in this process's environment (the engine's processes inherit
    it), unless the environment already chose."""
    for name, value in RUNNER_ENV.items():
        os.environ.setdefault(name, value)


def build_llm(model: str, **kwargs: Any):
    """An offline `vllm.LLM` from `engine_args(model, **kwargs)`."""
    from vllm import LLM

    pin_model_runner()
    return LLM(**engine_args(model, **kwargs))


def build_async_llm(model: str, **kwargs: Any):
    """An in-process `AsyncLLM` from `engine_args(model, **kwargs)` (the server's)."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    pin_model_runner()
    return AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args(model, **kwargs)))


def vllm_serve_command(args: dict[str, Any], extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """`vllm serve` for engine arguments from `engine_args`, with `extra` flags after them.
    A ShaRP engine's command also trusts per-request mm_processor_kwargs (`sharp`)."""
    args = dict(args)
    command = ["vllm", "serve", args.pop("model")]
    for name, value in args.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value is not False and value is not None:
            command += [flag, json.dumps(value) if isinstance(value, dict | list) else str(value)]
    if "worker_extension_cls" in args:
        command.append("--trust-request-mm-kwargs")
    return command + list(extra)


def vllm_serve_line(args: dict[str, Any], extra: list[str] | tuple[str, ...] = ()) -> str:
    """The shell line: a ShaRP engine's runner pin, then the command."""
    pin = [f"{name}={value}" for name, value in RUNNER_ENV.items()] if "worker_extension_cls" in args else []
    return shlex.join([*pin, *vllm_serve_command(args, extra)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sharp_plugin.recipe",
        description="Print (or run) the stock `vllm serve` command that serves MODEL with ShaRP.",
    )
    parser.add_argument("--exec", action="store_true", help="run the command instead of printing it")
    parser.add_argument("--architecture", help="the ShaRP class (default: from MODEL's config.json)")
    parser.add_argument("model")
    parser.add_argument("serve_flags", nargs=argparse.REMAINDER, help="more `vllm serve` flags")
    options = parser.parse_args(argv)
    args = engine_args(options.model, architecture=options.architecture)
    if not options.exec:
        print(vllm_serve_line(args, options.serve_flags))
        return
    pin_model_runner()
    command = vllm_serve_command(args, options.serve_flags)
    executable = os.path.join(os.path.dirname(sys.executable), "vllm")  # this environment's vllm
    os.execv(executable, [executable, *command[1:]])


if __name__ == "__main__":
    main()
