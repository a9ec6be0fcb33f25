# GPU image: vLLM's own image at the minor the plugin is pinned to (0.32, the same as the
# CPU wheel; tests/test_deployment.py checks that the three agree). The project is added
# on top without touching vLLM or torch. Build: docker build -t sharp-serve .
FROM vllm/vllm-openai:v0.32.0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# FFmpeg's shared libraries, which torchcodec loads (`media.decoder: torchcodec`, on the CPU
# or on NVDEC with `media.decode_device: cuda`); the distribution's own build, so unpinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

# What the plugin and server add, pinned; `--no-deps` for the project itself, so that
# pip can never replace the image's vLLM or torch.
# uvicorn at the minor server/connections.py was written against (its httptools protocol).
RUN pip install --no-cache-dir decord2==3.4.0 av==18.1.0 torchcodec==0.17.0 pydantic-settings==2.16.3 \
    python-multipart==0.0.34 "uvicorn[standard]==0.55.0"

WORKDIR /opt/sharp-serve
COPY pyproject.toml README.md ./
COPY sharp_plugin ./sharp_plugin
COPY server ./server
COPY configs ./configs
# The 4 MB proxy model and its task: SHARP_SERVE_CONFIG=configs/default.yaml is a GPU
# smoke test that needs no hub (relative paths resolve from /opt/sharp-serve).
COPY proxy_videoqa ./proxy_videoqa
COPY models ./models
COPY docker/entrypoint.sh /usr/local/bin/sharp-serve-entrypoint
RUN pip install --no-cache-dir --no-deps . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin sharp \
    && mkdir -p /cache /data/videos /var/lib/sharp-serve/files \
    && chown -R sharp:sharp /cache /data/videos /var/lib/sharp-serve

# Model weights and compile caches live in one volume (mount it to keep downloads). The
# Hugging Face token comes from the environment at run time (HF_TOKEN), never the image.
ENV HF_HOME=/cache/huggingface \
    VLLM_CACHE_ROOT=/cache/vllm \
    VLLM_PLUGINS=sharp \
    VLLM_USE_V2_MODEL_RUNNER=0 \
    SHARP_SERVE_CONFIG=/opt/sharp-serve/configs/gpu-qwen25vl-7b.yaml \
    SHARP_SERVE_HOST=0.0.0.0 \
    SHARP_SERVE_PORT=8000
VOLUME ["/cache"]

USER 10001:10001
EXPOSE 8000
# Generous start period: weights download and the memory profile come before /health.
HEALTHCHECK --interval=30s --timeout=5s --start-period=900s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('SHARP_SERVE_PORT', '8000')}/health\", timeout=4)"]
ENTRYPOINT ["sharp-serve-entrypoint"]
