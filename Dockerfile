# GPU image: the same vLLM minor (0.32) as the CPU wheel, so one plugin fits both.
# A stub until the deployment issue: it installs the plugin into vLLM's own image and
# serves with `vllm serve`; the FastAPI server lands with its issue.
FROM vllm/vllm-openai:v0.32.0

WORKDIR /opt/sharp-serve
COPY pyproject.toml README.md ./
COPY sharp_plugin ./sharp_plugin
COPY server ./server

# The base image already has vLLM 0.32 and torch; add only what the plugin needs.
RUN pip install --no-cache-dir decord==0.6.0 av==18.1.0 \
    && pip install --no-cache-dir --no-deps .

ENV VLLM_PLUGINS=sharp
ENTRYPOINT ["vllm", "serve"]
