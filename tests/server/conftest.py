from __future__ import annotations

import base64
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ..conftest import REPO
from ..process import free_port, http_server

STARTUP_TIMEOUT_S = 300
# Limits tightened (via environment overrides of the default config) so that the
# over-limit cases stay small.
TEST_LIMITS = {
    "SHARP_SERVE_MEDIA__MAX_UPLOAD_BYTES": str(2_000_000),
    "SHARP_SERVE_MEDIA__MAX_VIDEO_SECONDS": "20",
    "SHARP_SERVE_MEDIA__MAX_FRAMES": "16",
}


class RunningServer:
    def __init__(self, base_url: str, media_root: Path, files_dir: Path, process, log: Path):
        self.base_url, self.media_root, self.files_dir = base_url, media_root, files_dir
        self.process, self.log = process, log
        # One client for every metrics read: `httpx.get` builds an SSL context per call,
        # and on the loaded CI box one of those stalled for 10-20 s (in a getpid() call)
        # while the engine generated, which blew the disconnect tests' windows.
        self._scraper = httpx.Client(base_url=base_url, timeout=10)

    def client(self, **kwargs):
        import openai

        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key="unused", **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value: the first of `name` whose labels include `labels`."""
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        for line in self._scraper.get("/metrics").text.splitlines():
            sample = line.split(" ", 1)[0]
            if sample.split("{", 1)[0] == name and all(label in sample for label in wanted):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError((name, labels))


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    """4 s of 224^2 noise at 8 fps (32 frames). The default config samples 2 fps -> 8
    frames, decoded at 112^2 -> a 4 x 8 x 8 grid -> N = 64 visual tokens."""
    from ..media import noise_video, write_mp4

    pixels, _ = noise_video(7, frames=32, size=224)
    return write_mp4(tmp_path_factory.mktemp("clips") / "clip.mp4", pixels, fps=8)


@pytest.fixture(scope="session")
def data_url(clip):
    return "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()


@pytest.fixture(scope="session")
def server(proxy_model_dir, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("server"), {}) as running:
        yield running


@pytest.fixture(scope="session")
def llava_server(tiny_llava_dir, tmp_path_factory):
    """The default config serving the tiny LLaVA-OneVision build instead: the server
    picks the ShaRP class from its config.json."""
    with running_server(
        tmp_path_factory.mktemp("llava-server"), {"SHARP_SERVE_ENGINE__MODEL": str(tiny_llava_dir)}
    ) as running:
        yield running


@pytest.fixture(scope="module")
def qwen3_server(tiny_qwen3_dir, tmp_path_factory):
    """The default config serving the tiny Qwen3-VL build (module-scoped: only
    test_families.py uses it)."""
    with running_server(
        tmp_path_factory.mktemp("qwen3-server"), {"SHARP_SERVE_ENGINE__MODEL": str(tiny_qwen3_dir)}
    ) as running:
        yield running


@contextmanager
def running_server(root: Path, env_overrides: dict[str, str]):
    media_root, files_dir = root / "media", root / "files"
    media_root.mkdir()
    port = free_port()
    env = {
        **TEST_LIMITS,
        "SHARP_SERVE_SECURITY__ALLOWED_LOCAL_ROOT": str(media_root),
        "SHARP_SERVE_FILES__DIRECTORY": str(files_dir),
        **env_overrides,
    }
    command = [
        sys.executable,
        "-m",
        "server",
        "--config",
        str(REPO / "configs/default.yaml"),
        "--port",
        str(port),
    ]
    base_url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    with http_server(
        command, f"{base_url}/health", log, env=env, cwd=root, timeout_s=STARTUP_TIMEOUT_S
    ) as process:
        running = RunningServer(base_url, media_root, files_dir, process, log)
        with running._scraper:
            yield running
