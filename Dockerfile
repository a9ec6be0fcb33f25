# GPU image: the same vLLM minor (0.32) as the CPU wheel, so one plugin fits both.
# A first cut until the deployment issue: the project installed into vLLM's own image,
# serving with sharp-serve (override the config with --config, or use `vllm serve`).
FROM vllm/vllm-openai:v0.32.0

WORKDIR /opt/sharp-serve
COPY pyproject.toml README.md ./
COPY sharp_plugin ./sharp_plugin
COPY server ./server
COPY configs ./configs
# The 4 MB proxy model and its task: `--config configs/default.yaml` is a GPU smoke test
# that needs no hub (run from /opt/sharp-serve, where the config's relative paths point).
COPY proxy_videoqa ./proxy_videoqa
COPY models ./models

# The base image already has vLLM 0.32 and torch; add only what the plugin needs.
RUN pip install --no-cache-dir decord==0.6.0 av==18.1.0 pydantic-settings==2.16.3 python-multipart==0.0.34 \
    && pip install --no-cache-dir --no-deps .

ENV VLLM_PLUGINS=sharp
EXPOSE 8000
ENTRYPOINT ["sharp-serve"]
CMD ["--config", "/opt/sharp-serve/configs/gpu-qwen25vl-7b.yaml"]
