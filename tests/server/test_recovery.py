"""The service recovers by itself and bounds what clients may hold, on a real server of
its own (the tests kill its engine core): idle sockets and slow clients are cut off at
their deadlines while requests are served; connections past the limit get a 503; a burst
past the queue gets 429s and nothing is lost; a killed engine core is restarted in
process (200s again, no person acting) and one that keeps dying ends the process with a
non-zero status for its supervisor. A bad limit is refused at start-up, by name."""

import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest

from ..conftest import REPO
from .conftest import running_server

pytestmark = pytest.mark.engine

HEADER_S, BODY_S = 2.0, 3.0
MAX_CONNECTIONS = 1100
QUEUED = 2  # past the engine's 8 running (default config's max_num_seqs)
LIMITS = {
    "SHARP_SERVE_HTTP__HEADER_TIMEOUT_S": str(HEADER_S),
    "SHARP_SERVE_HTTP__BODY_TIMEOUT_S": str(BODY_S),
    "SHARP_SERVE_HTTP__MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    "SHARP_SERVE_MAX_QUEUED_REQUESTS": str(QUEUED),
    "SHARP_SERVE_RECOVERY__BACKOFF_S": "0",
    "SHARP_SERVE_RECOVERY__MAX_RESTARTS": "1",  # the second death ends the process
}


@pytest.fixture(scope="module")
def fragile_server(proxy_model_dir, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("fragile-server"), LIMITS) as running:
        yield running


def _port(server) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def _chat(server, data_url=None, max_tokens=2, timeout=120):
    content = [{"type": "text", "text": "What colour is the shape?"}]
    if data_url:
        content.insert(0, {"type": "video_url", "video_url": {"url": data_url}})
    messages = [{"role": "user", "content": content}]
    body = {
        "model": "sharp-proxy-qwen25vl",
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "messages": messages,
    }
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=timeout)


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection: its end reached, after whatever it
    answered (a 408; or the 400 of a route that refused the body before it all came)."""
    sock.settimeout(0.5)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


def test_idle_sockets_and_tricklers_are_cut_off_while_requests_are_served(fragile_server):
    server, port = fragile_server, _port(fragile_server)
    reasons = ("headers", "body")
    cut_before = {r: _metric(server, "sharp_cut_off_connections_total", reason=r) for r in reasons}
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(1000)]
    stop = threading.Event()
    tricklers = []

    def trickle(sock: socket.socket, head: bytes, body: bytes) -> None:
        sock.sendall(head)
        for byte in body:
            if stop.is_set():
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return  # cut off
            time.sleep(0.2)

    for index in range(20):
        sock = socket.create_connection(("127.0.0.1", port))
        if index % 2:  # headers a byte at a time
            head, body = b"", b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n"
        else:  # headers at once, then a body a byte at a time
            head, body = b"POST /v1/files HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n", b"x" * 1000
        thread = threading.Thread(target=trickle, args=(sock, head, body), daemon=True)
        thread.start()
        tricklers.append(sock)
    try:
        started = time.monotonic()
        answer = _chat(server)
        served_in = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        assert served_in < 1.0, f"a normal request took {served_in:.2f} s among 1,020 held sockets"
        time.sleep(BODY_S + 1.5)  # past both deadlines
        assert all(_closed(sock) for sock in idle), "an idle socket outlived the header deadline"
        assert all(_closed(sock) for sock in tricklers), "a trickler outlived its deadline"
    finally:
        stop.set()
        for sock in idle + tricklers:
            sock.close()
    cut = {
        r: _metric(server, "sharp_cut_off_connections_total", reason=r) - cut_before[r] for r in cut_before
    }
    assert cut["headers"] >= 1010 and cut["body"] >= 10, cut
    assert _chat(server).status_code == 200


def test_a_connection_past_the_limit_gets_a_503(fragile_server):
    server, port = fragile_server, _port(fragile_server)
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.5)  # the server has accepted them all
        extra = socket.create_connection(("127.0.0.1", port))
        extra.settimeout(5)
        reply = extra.recv(4096)
        extra.close()
        assert reply.startswith(b"HTTP/1.1 503") and b'"too_many_connections"' in reply, reply[:200]
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)
    assert _chat(server).status_code == 200


def test_a_burst_past_the_queue_gets_429s_and_loses_nothing(fragile_server, data_url):
    """4x the bound at once (8 running + 2 queued): every request ends, each with a 200
    or a 429 carrying Retry-After; afterwards the server admits again, and its memory
    is back where it was."""
    server = fragile_server
    process = psutil.Process(server.process.pid)
    _chat(server, data_url)  # warm
    rss_before = process.memory_info().rss
    bound = 8 + QUEUED
    results: list[httpx.Response | BaseException] = []

    def send() -> None:
        try:
            results.append(_chat(server, data_url, max_tokens=8))
        except BaseException as exc:  # a lost or stuck request fails below
            results.append(exc)

    threads = [threading.Thread(target=send) for _ in range(4 * bound)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert len(results) == 4 * bound, "a request was lost or stuck"
    statuses = [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in results]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(429) >= 1 and statuses.count(200) >= bound, statuses
    refused = next(r for r in results if r.status_code == 429)
    assert refused.headers["retry-after"] == "2" and refused.json()["error"]["code"] == "queue_full"
    assert _metric(server, "sharp_rejected_requests_total") == statuses.count(429)
    assert _chat(server, data_url).status_code == 200  # every place came back
    growth = (process.memory_info().rss - rss_before) / 2**20
    assert growth < 100, f"the server's RSS grew {growth:.0f} MiB over the burst"


def _kill_engine_core(server) -> None:
    cores = [p for p in psutil.Process(server.process.pid).children(recursive=True)
             if "EngineCore" in " ".join(p.cmdline())]  # fmt: skip
    assert cores, "the server should run vLLM's engine core as a child process"
    for process in cores:
        process.kill()


def test_a_killed_engine_core_is_restarted_and_one_that_keeps_dying_ends_the_process(
    fragile_server, data_url
):
    server = fragile_server
    _kill_engine_core(server)
    killed = time.monotonic()
    seen_503 = False
    while True:
        status = httpx.get(f"{server.base_url}/health", timeout=10).status_code
        seen_503 |= status == 503
        if status == 200 and seen_503:
            break
        assert time.monotonic() - killed < 240, "no recovery within 240 s"
        time.sleep(0.25)
    print(f"recovered {time.monotonic() - killed:.1f} s after the kill")
    assert _chat(server, data_url).status_code == 200
    assert _metric(server, "sharp_engine_deaths_total") == 1
    assert _metric(server, "sharp_engine_restarts_total") == 1
    # A second death within the window: past max_restarts (1), so the process ends,
    # non-zero, for Docker or Kubernetes to restart it.
    _kill_engine_core(server)
    assert server.process.wait(timeout=30) == 70


def test_a_nonsensical_limit_is_refused_at_start_naming_it(tmp_path):
    env = {**os.environ, "SHARP_SERVE_HTTP__HEADER_TIMEOUT_S": "-1", "SHARP_SERVE_MAX_QUEUED_REQUESTS": "0"}
    run = subprocess.run([sys.executable, "-m", "server", "--config", str(REPO / "configs/default.yaml")],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2
    assert "http.header_timeout_s: Input should be greater than 0" in run.stderr
    assert "max_queued_requests: Input should be greater than or equal to 1" in run.stderr
    assert "Traceback" not in run.stderr


def _metric(server, name: str, **labels: str) -> float:
    try:
        return server.metric(name, **labels)
    except KeyError:
        return 0.0
