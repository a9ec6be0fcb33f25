"""The catalogue: every hostile or malformed input we know of, and every pruning setting
at and past its bounds, sent to the real server (real engine). Each gets a 4xx in
OpenAI's shape that names the field, and the engine serves the next request.

Runs before test_server_e2e.py (alphabetical), whose last test kills the shared engine.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import zlib

import httpx
import pytest

from sharp_plugin.core import settings as bounds

from ..media import noise_video, write_mp4

pytestmark = pytest.mark.engine

MODEL = "sharp-proxy-qwen25vl"
VIDEO_TOKENS = 64  # of the clip below under the default config


@pytest.fixture(scope="module")
def video_part(tmp_path_factory):
    pixels, _ = noise_video(3, frames=32, size=224)
    clip = write_mp4(tmp_path_factory.mktemp("hostile") / "clip.mp4", pixels, fps=8)
    url = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    return {"type": "video_url", "video_url": {"url": url}}


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, with almost no data: a decompression
    bomb's shape, a few hundred bytes on the wire."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def declared_too_large(base_url: str) -> httpx.Response:
    """A request that declares a 1 TiB body and sends 2 bytes: answered from the headers
    alone (no client library will send a length it does not have, so a raw socket)."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n{}" % (1 << 40)
        )
        raw = b""
        while chunk := connection.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return httpx.Response(status, content=body, headers={"Content-Type": "application/json"})


def ask(server, video_part, *, text="What colour is the shape?", **extra):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": [video_part, {"type": "text", "text": text}]}],
        "max_tokens": 2,
        **extra,
    }
    # json.dumps escapes non-ASCII, so a lone surrogate travels as "\\ud800", as a
    # JavaScript client would send it.
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        timeout=120,
    )


def expect_error(response, status: int, param: str | None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param or param in error["message"], (param, error)


# (settings, the field the error must name): each setting past its bounds.
SETTINGS_PAST_BOUNDS = [
    ({"method": "random", "retention": 0.5, "seed": 1180591620717411303424}, "seed"),
    ({"method": "random", "retention": 0.5, "seed": bounds.MAX_SEED + 1}, "seed"),
    ({"method": "random", "retention": 0.5, "seed": -1}, "seed"),
    ({"retention": 0.5, "segment_frames": 10**20}, "segment_frames"),
    ({"retention": 0.5, "segment_frames": bounds.MAX_SEGMENT_GROUPS + 1}, "segment_frames"),
    ({"retention": 0.0}, "retention"),
    ({"retention": 1.0000001}, "retention"),
    ({"retention": True}, "retention"),
    ({"retention": "0.5"}, "retention"),
    ({"retention": 0.5, "prune_layer": bounds.MAX_PRUNE_LAYER + 1}, "prune_layer"),
    ({"retention": 0.5, "prune_layer": 4}, "prune_layer"),  # the model has 4 layers
    ({"retention": 0.5, "prune_layer": True}, "prune_layer"),
    ({"retention": 0.5, "lam": bounds.MAX_LAM * 1.01}, "lam"),
    ({"retention": 0.5, "lam": -0.5}, "lam"),
    ({"retention": 0.5, "dedup_threshold": 0.0}, "dedup_threshold"),
    ({"retention": 0.5, "dedup_threshold": 1.5}, "dedup_threshold"),
    ({"pruning_rate": 1.0}, "pruning_rate"),
    ({"pruning_rate": True}, "pruning_rate"),
    ({"method": "oracle", "retention": 0.5, "oracle_tokens": [VIDEO_TOKENS]}, "oracle_tokens"),
    ({"method": "oracle", "retention": 0.5, "oracle_tokens": [10**6]}, "oracle_tokens"),
    ({"method": "oracle", "retention": 0.5, "oracle_tokens": [bounds.MAX_VIDEO_TOKENS]}, "oracle_tokens"),
    (
        {"method": "oracle", "retention": 0.5, "oracle_tokens": [0] * (bounds.MAX_ORACLE_TOKENS + 1)},
        "oracle_tokens",
    ),
    ({"method": "oracle", "retention": 0.5, "oracle_tokens": [True]}, "oracle_tokens"),
    ({"retention": "most"}, "retention"),
    ({"retention": "auto", "min_retention": 0.0}, "min_retention"),
    ({"retention": "auto", "max_retention": 1.5}, "max_retention"),
    ({"retention": "auto", "min_retention": 0.5, "max_retention": 0.2}, "min_retention"),
    ({"retention": "auto", "max_retention": float("nan")}, "max_retention"),
    ({"skip_static": 1}, "skip_static"),
    ({"skip_static": True, "change_threshold": 0.0}, "change_threshold"),
    ({"skip_static": True, "change_threshold": 1.01}, "change_threshold"),
    ({"skip_static": True, "change_threshold": "0.1"}, "change_threshold"),
    ({"skip_static": True, "keep_groups": [-1]}, "keep_groups"),
    ({"skip_static": True, "keep_groups": [VIDEO_TOKENS]}, "keep_groups"),  # past the video's groups
    ({"skip_static": True, "keep_groups": [0] * (bounds.MAX_ORACLE_TOKENS + 1)}, "keep_groups"),
]

# Settings exactly at their bounds: served, with the exact kept count.
SETTINGS_AT_BOUNDS = [
    {"method": "random", "retention": 0.5, "seed": bounds.MAX_SEED},
    {"method": "random", "retention": 0.5, "seed": 0},
    {"retention": 0.5, "segment_frames": bounds.MAX_SEGMENT_GROUPS},
    {"retention": 0.5, "segment_frames": 0},
    {"retention": 1},
    {"retention": 1e-9},
    {"retention": 0.5, "prune_layer": 3},
    {"retention": 0.5, "prune_layer": 0},
    {"retention": 0.5, "lam": bounds.MAX_LAM},
    {"retention": 0.5, "lam": 0.0},
    {"retention": 0.5, "dedup_threshold": 1.0},
    {"retention": 0.5, "dedup_threshold": 1e-6},
    {"method": "oracle", "retention": 0.5, "oracle_tokens": [VIDEO_TOKENS - 1, 0]},
    {"pruning_rate": 0.0},
    {"retention": "auto", "min_retention": 1.0, "max_retention": 1.0},
    {"retention": "auto", "min_retention": 1e-9, "max_retention": 1e-9},
    {"retention": 0.5, "skip_static": True, "change_threshold": 1.0},
    {"retention": 0.5, "skip_static": True, "change_threshold": 1e-9},
    {"retention": 0.5, "skip_static": True, "keep_groups": [0, 3]},  # the clip has 4 groups
]


@pytest.mark.parametrize("settings, field", SETTINGS_PAST_BOUNDS, ids=lambda v: str(v)[:60])
def test_settings_past_their_bounds_are_a_400_naming_the_field(server, video_part, settings, field):
    expect_error(ask(server, video_part, sharp=settings), 400, f"sharp.{field}")


@pytest.mark.parametrize("settings", SETTINGS_AT_BOUNDS, ids=lambda v: str(v)[:60])
def test_settings_at_their_bounds_are_served(server, video_part, settings):
    response = ask(server, video_part, sharp=settings)
    assert response.status_code == 200, response.text
    report = response.json()["sharp"]
    assert report["video_tokens"] == VIDEO_TOKENS
    assert report["videos"][0]["fallback"] is None


def test_hostile_requests_are_4xx_and_the_engine_keeps_serving(server, video_part, tmp_path):
    url = server.base_url

    def text_part(text):
        return {"type": "text", "text": text}

    png = "data:image/png;base64," + base64.b64encode(huge_png(60_000, 60_000)).decode()
    cases = [
        # (what, response, status, the field it names)
        ("prompt past the context", ask(server, video_part, text="red green blue " * 3000), 400, None),
        ('stop: [""]', ask(server, video_part, stop=[""]), 400, None),
        ("max_tokens past 64 bits", ask(server, video_part, max_tokens=2**64), 400, "max_tokens"),
        ("seed past 64 bits", ask(server, video_part, seed=2**64), 400, "seed"),
        ("lone surrogate", ask(server, video_part, text="colour \ud800?"), 400, "messages"),
        (
            "fps of 1e308",
            ask(server, video_part, media_io_kwargs={"video": {"fps": 1e308}}),
            400,
            "media_io_kwargs.video.fps",
        ),
        (
            "file:// with %00",
            ask(server, {"type": "video_url", "video_url": {"url": f"file://{server.media_root}/a%00.mp4"}}),
            400,
            None,
        ),
        (
            "a PNG declaring 3.6 gigapixels",
            ask(server, {"type": "image_url", "image_url": {"url": png}}),
            413,
            "image_url",
        ),
        ("too many stop strings", ask(server, video_part, stop=["x"] * 17), 400, "stop"),
        (
            "ShaRP with no user text around the video",
            ask(server, video_part, text=" ", sharp={"retention": 0.25}),
            400,
            "sharp.method",
        ),
        ("declared body over the cap", declared_too_large(url), 413, None),
    ]
    for what, response, status, param in cases:
        try:
            expect_error(response, status, param)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
    # The engine serves the next request, and nothing was counted as a server error.
    ok = ask(server, video_part, sharp={"retention": 0.25})
    assert ok.status_code == 200 and ok.json()["sharp"]["video_tokens_kept"] == 16
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    assert (
        'sharp_requests_total{route="/v1/chat/completions",status="500"}'
        not in httpx.get(f"{url}/metrics", timeout=10).text
    )
    assert server.process.poll() is None


def test_pruning_rate_keeps_what_the_matching_retention_keeps(server, video_part):
    """1 - 0.9 is 0.0999... in floating point; both spellings must keep the same count."""
    by_rate = ask(server, video_part, sharp={"pruning_rate": 0.9}).json()["sharp"]
    by_retention = ask(server, video_part, sharp={"retention": 0.1}).json()["sharp"]
    assert by_rate["video_tokens_kept"] == by_retention["video_tokens_kept"]
    assert by_rate["retention"] == 0.1
