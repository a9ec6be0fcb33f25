# Entry points for a fresh CPU machine. `make serve` and `make test` are the README's
# two set-up commands; both install first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR ?= models/sharp-proxy-qwen25vl
PORT ?= 8000

.PHONY: install install-browser install-lmms-eval lint test serve serve-vllm bench-quality

install:
	bash scripts/install_cpu.sh $(VENV)

# The browser the /inspect page's test drives (Debian packages; root or sudo).
install-browser:
	bash scripts/install_browser.sh

# lmms-eval in its own venv (.venv-lmms), for bench/lmms_eval_parity.py and its CI mode.
install-lmms-eval:
	bash scripts/install_lmms_eval.sh

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile
	$(PY) scripts/check_vllm_internals.py

test: install install-browser install-lmms-eval lint
	$(PY) -m pytest

runs/media/sample.mp4:
	mkdir -p runs/media && $(PY) scripts/make_sample_video.py $@

serve: install runs/media/sample.mp4
	$(VENV)/bin/sharp-serve --config configs/default.yaml

# The plugin under stock `vllm serve` (no sharp-serve front end), with the engine
# arguments of the project's one recipe (sharp_plugin/recipe.py; drop --exec to print
# the command).
serve-vllm: install runs/media/sample.mp4
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} VLLM_HOST_IP=$${VLLM_HOST_IP:-127.0.0.1} \
	$(PY) -m sharp_plugin.recipe --exec $(MODEL_DIR) --host 127.0.0.1 --port $(PORT) \
		--allowed-local-media-path $(CURDIR)/runs/media \
		--max-model-len 4096 --enforce-eager --limit-mm-per-prompt '{"video": 1, "image": 1}'

# The full proxy quality benchmark (bench/README.md gives its cost); results in bench/results/.
bench-quality: install
	$(PY) -m bench.quality
