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
        self.scoring_seconds = Histogram(
            "sharp_scoring_seconds", "ShaRP scoring pass time per request", registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )  # fmt: skip
        self.ttft_seconds = Histogram(
            "sharp_ttft_seconds", "Time to first token after the request arrived", registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
        )  # fmt: skip
        self.decode_seconds = Histogram(
            "sharp_video_decode_seconds", "decord decode time per video", registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )  # fmt: skip

        self.unfinished_requests = Gauge(
            "sharp_engine_unfinished_requests", "Requests the engine is still running", registry=self.registry
        )

    def observe_report(self, report) -> None:
        self.video_tokens.labels("before").inc(report.video_tokens)
        self.video_tokens.labels("after").inc(report.video_tokens_kept)
        self.scoring_seconds.observe(report.scoring_ms / 1e3)

    def render(self) -> bytes:
        return generate_latest(self.registry)
