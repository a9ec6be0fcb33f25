"""sharp-serve --config configs/default.yaml [--host H] [--port P]"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pydantic import ValidationError

from .settings import REPO_ROOT, ServerSettings

DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="sharp-serve", description="OpenAI-compatible video LLM server with ShaRP"
    )
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML settings file")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = ServerSettings.from_yaml(args.config, **overrides)
    except ValidationError as exc:  # refused at start, naming each setting
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            print(f"sharp-serve: {args.config}: {where}: {error['msg']}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # vLLM on CPU: loopback for its internal queues, a small KV cache unless told otherwise.
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    import uvicorn

    from .app import create_app
    from .connections import deadline_protocol

    app = create_app(settings)

    def cut_off(reason: str) -> None:
        app.state.metrics.cut_off_connections.labels(reason).inc()

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        http=deadline_protocol(settings.http, cut_off),
        timeout_keep_alive=settings.http.keep_alive_timeout_s,
    )
    # Bind before the engine loads (uvicorn would bind after the lifespan has started it):
    # a port already taken fails in a second, not after a minute of loading weights onto
    # the device; connections made while the engine loads wait in the backlog. vLLM's
    # own server binds early for the same reason.
    listening = config.bind_socket()
    app.state.http_server = uvicorn.Server(config)  # the supervisor stops it when it gives up
    app.state.http_server.run(sockets=[listening])
    sys.exit(app.state.exit_status)


if __name__ == "__main__":
    main()
