"""A server whose engine dies: its own server, since the test kills the engine core."""

import time

import httpx
import pytest

from .conftest import running_server

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def doomed_server(proxy_model_dir, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("doomed-server"), {}) as running:
        yield running


def test_health_turns_503_when_the_engine_dies(doomed_server):
    import psutil

    server = doomed_server
    engine_cores = [
        p
        for p in psutil.Process(server.process.pid).children(recursive=True)
        if "EngineCore" in " ".join(p.cmdline())
    ]
    assert engine_cores, "the server should run vLLM's engine core as a child process"
    for process in engine_cores:
        process.kill()
    deadline = time.monotonic() + 30
    while httpx.get(f"{server.base_url}/health", timeout=10).status_code != 503:
        assert time.monotonic() < deadline, "/health kept answering 200 with a dead engine"
        time.sleep(0.5)
    error = httpx.get(f"{server.base_url}/health", timeout=10).json()["error"]
    assert error["type"] == "service_unavailable"
