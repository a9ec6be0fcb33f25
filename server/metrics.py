"""Prometheus metrics. One registry per app, so tests and several apps in one process
never collide on vLLM's or each other's global collectors."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sharp_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.errors = Counter(
            "sharp_errors", "Error responses by OpenAI error type", ["type"], registry=self.registry
        )
        self.video_tokens = Counter(
            "sharp_video_tokens", "Video tokens before and after pruning", ["stage"], registry=self.registry
        )
        self.static_groups = Counter(
            "sharp_static_groups",
            "Temporal groups measured before the tower (skip_static), and those skipped",
            ["result"],
            registry=self.registry,
        )
        self.tower_seconds = Histogram(
            "sharp_tower_seconds", "Vision-tower time per video that ran it", registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip
        self.scoring_seconds = Histogram(
            "sharp_scoring_seconds", "ShaRP scoring pass time per request", registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )  # fmt: skip
        self.ttft_seconds = Histogram(
            "sharp_ttft_seconds", "Time to first token after the request arrived", registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
        )  # fmt: skip
        self.decode_seconds = Histogram(
            "sharp_video_decode_seconds", "Decode time per video (media.decoder)", registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )  # fmt: skip

        self.completion_tokens = Counter(
            "sharp_completion_tokens", "Tokens generated, counted as they stream", registry=self.registry
        )
        self.selection_fallbacks = Counter(
            "sharp_selection_fallbacks",
            "Selections that failed in the worker and fell back to uniform",
            registry=self.registry,
        )
        self.cache_lookups = Counter(
            "sharp_cache_lookups",
            "Per video: vLLM's encoder cache (the whole selection), the vision-tower cache "
            "(a known video with a new question) and the black-prior cache",
            ["cache", "result"],
            registry=self.registry,
        )
        self.engine_aborts = Counter(
            "sharp_engine_aborts",
            "Engine requests stopped before they finished: the client left, the request "
            "timed out, or generation failed",
            registry=self.registry,
        )
        self.engine_deaths = Counter(
            "sharp_engine_deaths", "Times the engine died (server/supervisor.py)", registry=self.registry
        )
        self.engine_restarts = Counter(
            "sharp_engine_restarts", "Times a new engine started after one died", registry=self.registry
        )
        self.rejected_requests = Counter(
            "sharp_rejected_requests",
            "Chat requests answered 429: more were waiting than the server queues",
            registry=self.registry,
        )
        self.cut_off_connections = Counter(
            "sharp_cut_off_connections",
            "Connections closed by the server: a request's headers or body past its deadline, or one "
            "connection past the limit",
            ["reason"],
            registry=self.registry,
        )
        self.unfinished_requests = Gauge(
            "sharp_engine_unfinished_requests", "Requests the engine is still running", registry=self.registry
        )

    def observe_response(self, route: str, status: int) -> None:
        """Every response, counted where all of them pass (server.guard), 5xx included."""
        self.requests.labels(route, str(status) if status else "no_response").inc()
        if status >= 400:
            self.errors.labels(error_type(status)).inc()

    def observe_report(self, report) -> None:
        self.video_tokens.labels("before").inc(report.video_tokens)
        self.video_tokens.labels("after").inc(report.video_tokens_kept)
        for video in report.videos:
            if video.scoring_ms and not video.cached:  # a cache hit ran no scoring pass
                self.scoring_seconds.observe(video.scoring_ms / 1e3)
            if video.fallback:
                self.selection_fallbacks.inc()
            if video.tower_ms and not video.cached:
                self.tower_seconds.observe(video.tower_ms / 1e3)
            if video.redundancy is not None and not video.cached:
                skipped = len(video.redundancy.skipped_groups)
                self.static_groups.labels("skipped").inc(skipped)
                self.static_groups.labels("embedded").inc(video.redundancy.groups - skipped)
            self._observe_caches(video)

    def _observe_caches(self, video) -> None:
        def lookup(cache: str, hit: bool) -> None:
            self.cache_lookups.labels(cache, "hit" if hit else "miss").inc()

        lookup("encoder", video.cached)
        if video.cached:
            return  # nothing else was looked up: the whole selection came from vLLM's cache
        if video.vision_cached is not None:
            lookup("vision", video.vision_cached)
        if video.prior is not None:
            lookup("prior", video.prior == "cached")

    def render(self) -> bytes:
        return generate_latest(self.registry)


def error_type(status: int) -> str:
    """OpenAI's error type for a status."""
    return {
        400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
        404: "not_found_error", 408: "request_timeout", 413: "payload_too_large", 415: "unsupported_media",
        429: "rate_limit_error",
        422: "invalid_request_error", 499: "client_closed_request", 503: "service_unavailable",
        504: "timeout_error",
    }.get(status, "server_error" if status >= 500 else "invalid_request_error")  # fmt: skip
