"""The per-request compression report: the worker's report of each video (through the
engine), with what the server knows of it (frames, where they are in the video)."""

from __future__ import annotations

from sharp_plugin.report import VideoReport

from ..media.video import DecodedVideo
from ..schemas import SharpReport, SharpSelection, SharpVideoReport
from .run import EngineRun


async def build_report(run: EngineRun, return_selection: bool) -> SharpReport:
    entries = await run.engine.sharp_report(run.report_id)
    videos = [
        video_report(report, cached, decoded, return_selection)
        for (report, cached), decoded in zip(entries, run.media.videos, strict=False)
    ]
    first = videos[0] if videos else None
    report = SharpReport(
        method=first.method if first else "none",
        retention=first.retention if first else 1.0,
        tower_ms=sum(v.tower_ms or 0.0 for v in videos),
        groups_skipped=sum(v.groups_skipped or 0 for v in videos),
        prune_layer=first.prune_layer if first else None,
        video_tokens=sum(v.video_tokens or 0 for v in videos),
        video_tokens_kept=sum(v.video_tokens_kept or 0 for v in videos),
        scoring_ms=sum(v.scoring_ms or 0.0 for v in videos),
        frames=sum(v.frames for v in videos),
        videos=videos,
    )
    run.metrics.observe_report(report)
    return report


def video_report(
    report: VideoReport, cached: bool, decoded: DecodedVideo, return_selection: bool
) -> SharpVideoReport:
    fields = report.model_dump(exclude={"selection"})
    if cached:  # nothing ran for this request: no time, and nothing to say of a run
        fields.update(
            scoring_ms=0.0,
            tower_ms=None,
            prior=None,
            vision_cached=None,
            context_missing=None,
            scored_with=None,
        )
    selection = selection_in_video(report, decoded) if return_selection else None
    return SharpVideoReport(**fields, frames=len(decoded.indices), cached=cached, selection=selection)


def selection_in_video(report: VideoReport, decoded: DecodedVideo) -> SharpSelection | None:
    """What was kept, where in the video: None when the worker no longer holds the
    selection (evicted), so there is nothing true to show."""
    kept = report.selection
    if kept is None:
        return None
    fps = decoded.info.fps
    return SharpSelection(
        **kept.model_dump(),
        frames_per_group=max(1, -(-len(decoded.indices) // kept.token_grid[0])),
        frame_timestamps=[round(index / fps, 6) for index in decoded.indices],
    )
