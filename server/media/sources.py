"""Resolve a content part's URL to bytes on disk (videos) or a PIL image, under the
server's safety settings: remote URLs off unless allowed, no private or loopback
addresses (also after a redirect) unless allowed, local paths only under a root."""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from ..errors import InvalidRequest, PayloadTooLarge, PermissionDenied, UnsupportedMedia
from ..settings import MediaSettings, SecuritySettings

MAX_REDIRECTS = 3
Resolver = Callable[[str], list[str]]


def system_resolver(host: str) -> list[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except socket.gaierror as exc:
        raise InvalidRequest(f"Cannot resolve host {host!r}", param="url", code="unresolvable_host") from exc


def decode_data_url(url: str, max_bytes: int) -> tuple[str, bytes]:
    """(media type, payload) of a base64 data: URL."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise InvalidRequest("Only base64 data: URLs are supported", param="url", code="invalid_data_url")
    if len(payload) * 3 // 4 > max_bytes:
        raise PayloadTooLarge(f"Inline media is over the limit of {max_bytes} bytes", param="url")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("The data: URL is not valid base64", param="url", code="invalid_base64") from exc
    if not data:
        raise InvalidRequest("The data: URL is empty", param="url", code="empty_media")
    return header[5:-7], data


def local_path(url: str, security: SecuritySettings, max_bytes: int) -> Path:
    root = security.allowed_local_root
    if root is None:
        raise PermissionDenied(
            "Local file URLs are disabled on this server", param="url", code="local_files_disabled"
        )
    raw = unquote(urlparse(url).path)
    if "\x00" in raw:
        raise InvalidRequest("The path contains a NUL byte", param="url", code="invalid_path")
    try:
        path = Path(raw).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise InvalidRequest("The path cannot be resolved", param="url", code="invalid_path") from exc
    if not path.is_relative_to(root.resolve()):
        raise PermissionDenied(
            "The path is outside the allowed directory", param="url", code="path_not_allowed"
        )
    try:
        if not path.is_file():
            raise InvalidRequest("No such file", param="url", code="file_not_found")
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidRequest("The file cannot be read", param="url", code="file_not_found") from exc
    if size > max_bytes:
        raise PayloadTooLarge(
            f"The file is {size} bytes, over the limit of {max_bytes}", param="url", code="file_too_large"
        )
    return path


def check_remote_host(host: str, security: SecuritySettings, resolve: Resolver) -> None:
    domains = security.allowed_url_domains
    if domains and not any(host == d or host.endswith("." + d) for d in domains):
        raise PermissionDenied(
            f"Host {host!r} is not in the allowed domains", param="url", code="domain_not_allowed"
        )
    if security.allow_private_addresses:
        return
    for address in resolve(host):
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise PermissionDenied(
                f"Host {host!r} resolves to a non-public address", param="url", code="address_not_allowed"
            )


async def fetch_remote(
    url: str,
    security: SecuritySettings,
    media: MediaSettings,
    *,
    max_bytes: int,
    resolve: Resolver = system_resolver,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bytes:
    """GET an https URL, following at most MAX_REDIRECTS redirects by hand so that every
    hop is checked like the first. (A DNS answer that changes between our check and
    httpx's own lookup is not covered: run behind an egress proxy for that.)"""
    if not security.allow_remote_urls:
        raise PermissionDenied(
            "Remote URLs are disabled on this server", param="url", code="remote_urls_disabled"
        )
    async with httpx.AsyncClient(
        follow_redirects=False, timeout=media.fetch_timeout_s, transport=transport
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            parsed = urlparse(url)
            if parsed.scheme != "https" or not parsed.hostname:
                raise InvalidRequest("Only https:// URLs are allowed", param="url", code="unsupported_url")
            check_remote_host(parsed.hostname, security, resolve)
            try:
                async with client.stream("GET", url) as response:
                    if response.is_redirect:
                        url = str(response.url.join(response.headers.get("location", "")))
                        continue
                    if response.status_code != 200:
                        raise InvalidRequest(
                            f"Fetching the URL failed with HTTP {response.status_code}",
                            param="url",
                            code="fetch_failed",
                        )
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body.extend(chunk)
                        if len(body) > max_bytes:
                            raise PayloadTooLarge(
                                f"Remote media is over the limit of {max_bytes} bytes", param="url"
                            )
                    return bytes(body)
            except httpx.HTTPError as exc:
                raise InvalidRequest(f"Fetching the URL failed: {type(exc).__name__}", param="url") from exc
    raise InvalidRequest("Too many redirects", param="url", code="too_many_redirects")


def open_image(data: bytes, max_pixels: int):
    """Decode an image, refusing one over `max_pixels` from its header alone (a small
    PNG can declare a gigapixel canvas: it is never decompressed)."""
    from PIL import Image, UnidentifiedImageError

    too_large = PayloadTooLarge(
        f"Image is over the limit of {max_pixels} pixels", param="image_url", code="image_too_large"
    )
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise too_large
        image.load()
        return image.convert("RGB")
    except Image.DecompressionBombError:  # PIL's own cap, met before ours when ours is higher
        raise too_large from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UnsupportedMedia(
            "The image could not be decoded", param="image_url", code="invalid_image"
        ) from exc
