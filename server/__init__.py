"""sharp-serve's OpenAI-compatible FastAPI front end (lands with the server issue).

Until then, serve with `vllm serve` and the plugin (see the README)."""
