"""The SSRF guard for remote media, with a mock transport and resolver (no network)."""

import asyncio
import base64

import httpx
import pytest

from server.errors import InvalidRequest, PayloadTooLarge, PermissionDenied
from server.media import sources
from server.settings import MediaSettings, SecuritySettings

PUBLIC = {
    "cdn.example.com": ["93.184.216.34"],
    "evil.example.com": ["127.0.0.1"],
    "lan.example.com": ["10.0.0.5"],
}


def resolver(host):
    if host in PUBLIC:
        return PUBLIC[host]
    return [host]  # literal addresses


def fetch(url, handler, **security):
    settings = SecuritySettings(allow_remote_urls=True, **security)
    return asyncio.run(
        sources.fetch_remote(
            url,
            settings,
            MediaSettings(),
            max_bytes=1000,
            resolve=resolver,
            transport=httpx.MockTransport(handler),
        )
    )


def ok(request):
    return httpx.Response(200, content=b"video-bytes")


def test_remote_urls_are_off_by_default():
    with pytest.raises(PermissionDenied, match="disabled"):
        asyncio.run(
            sources.fetch_remote(
                "https://cdn.example.com/v.mp4", SecuritySettings(), MediaSettings(), max_bytes=10
            )
        )


def test_public_https_is_fetched():
    assert fetch("https://cdn.example.com/v.mp4", ok) == b"video-bytes"


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/v.mp4",
        "https://lan.example.com/v.mp4",
        "https://127.0.0.1/v",
        "https://[::1]/v",
        "https://169.254.169.254/latest",
    ],
)
def test_private_and_loopback_targets_are_refused(url):
    with pytest.raises(PermissionDenied, match="non-public"):
        fetch(url, ok)


def test_a_redirect_to_loopback_is_refused():
    def handler(request):
        if request.url.host == "cdn.example.com":
            return httpx.Response(302, headers={"location": "https://127.0.0.1:8000/admin"})
        raise AssertionError("the loopback target must never be contacted")

    with pytest.raises(PermissionDenied, match="non-public"):
        fetch("https://cdn.example.com/v.mp4", handler)


def test_plain_http_and_other_schemes_are_refused():
    with pytest.raises(InvalidRequest, match="https"):
        fetch("http://cdn.example.com/v.mp4", ok)


def test_domain_allow_list():
    with pytest.raises(PermissionDenied, match="allowed domains"):
        fetch("https://cdn.example.com/v.mp4", ok, allowed_url_domains=["videos.example.org"])


def test_oversized_remote_body_is_refused():
    with pytest.raises(PayloadTooLarge):
        fetch("https://cdn.example.com/v.mp4", lambda r: httpx.Response(200, content=b"x" * 5000))


def test_data_urls():
    payload = base64.b64encode(b"abc").decode()
    assert sources.decode_data_url(f"data:video/mp4;base64,{payload}", 10) == ("video/mp4", b"abc")
    with pytest.raises(InvalidRequest, match="base64"):
        sources.decode_data_url("data:video/mp4;base64,@@@notbase64", 100)
    with pytest.raises(PayloadTooLarge):
        sources.decode_data_url(f"data:video/mp4;base64,{base64.b64encode(b'x' * 100).decode()}", 10)


def test_local_paths_stay_under_the_root(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    (root / "ok.mp4").write_bytes(b"x")
    (tmp_path / "secret.mp4").write_bytes(b"x")
    security = SecuritySettings(allowed_local_root=root)
    assert sources.local_path(f"file://{root}/ok.mp4", security, 1 << 30) == (root / "ok.mp4").resolve()
    with pytest.raises(PermissionDenied):
        sources.local_path(f"file://{root}/../secret.mp4", security, 1 << 30)
    with pytest.raises(PermissionDenied, match="disabled"):
        sources.local_path(f"file://{root}/ok.mp4", SecuritySettings(), 1 << 30)
