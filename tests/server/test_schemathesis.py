"""schemathesis against the real server's own OpenAPI spec: positive and negative cases
for every operation, bounded in count, with no server error allowed.

The spec is the server's, narrowed in one way so that generated requests reach the
engine instead of stopping at the first check: `model` is the served model, media URLs
are a real clip (as data: and file:// URLs) and output lengths are small. Everything
else (sampling values, the `sharp` object, content parts, uploads, file ids) is
generated from the spec as served.
"""

from __future__ import annotations

import base64
import copy

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ..media import noise_video, write_mp4

pytestmark = pytest.mark.engine

MODEL = "sharp-proxy-qwen25vl"
EXAMPLES = 150  # bounded: about a minute on 2 cores


def narrowed(spec: dict, media_urls: list[str]) -> dict:
    spec = copy.deepcopy(spec)
    schemas = spec["components"]["schemas"]
    request = schemas["ChatCompletionRequest"]["properties"]
    request["model"] = {"type": "string", "enum": [MODEL]}
    for field in ("max_tokens", "max_completion_tokens"):
        request[field] = {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 4}, {"type": "null"}]}
    request["n"] = {"type": "integer", "minimum": 1, "maximum": 2}
    schemas["URLRef"]["properties"]["url"] = {"type": "string", "enum": media_urls}
    return spec


@pytest.fixture(scope="module")
def api(server, tmp_path_factory):
    pixels, _ = noise_video(5, frames=8, size=112)
    clip = write_mp4(server.media_root / "fuzz.mp4", pixels, fps=4)
    urls = [
        "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode(),
        f"file://{clip}",
    ]
    spec = httpx.get(f"{server.base_url}/openapi.json", timeout=30).json()
    return schemathesis.openapi.from_dict(narrowed(spec, urls))


def test_no_generated_request_gets_a_server_error(server, api):
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/chat/completions", "POST /v1/files"}
    strategies = [
        op.as_strategy(generation_mode=mode)
        for op in operations
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    ]
    seen: dict[int, int] = {}
    failures: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(data=st.data())
    def run(data):
        case = data.draw(st.one_of(strategies))
        response = case.call(base_url=server.base_url, timeout=120)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            failures.append(f"{case.operation.label} -> {response.status_code}: {response.text[:300]}")
        elif response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, response.text

    run()
    print("statuses:", dict(sorted(seen.items())))
    assert not failures, "\n".join(failures)
    assert seen.get(200, 0) >= 10, f"too few requests reached the engine: {seen}"
    assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200
