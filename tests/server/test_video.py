"""decord decoding on real encoded files: the frames it says it picks are the frames."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.media import video
from server.settings import MediaSettings

from ..media import frame_coded_video, frame_index_of, write_audio_only, write_mp4


@pytest.fixture(scope="module")
def coded_mp4(tmp_path_factory):
    # 30 frames at 10 fps = 3 s; frame i has grey level 8 * i.
    return write_mp4(tmp_path_factory.mktemp("v") / "coded.mp4", frame_coded_video(30), fps=10, lossless=True)


def test_probe_reads_the_stream(coded_mp4):
    info = video.probe(coded_mp4)
    assert (info.num_frames, info.fps, info.width, info.height) == (30, 10.0, 112, 112)
    assert info.duration_s == pytest.approx(3.0)


@pytest.mark.parametrize("num_frames, fps", [(4, None), (7, None), (None, 2.0), (None, 5.0)])
def test_decoded_frames_are_the_frames_it_picked(coded_mp4, num_frames, fps):
    decoded = video.decode(coded_mp4, MediaSettings(max_frames=32), num_frames=num_frames, fps=fps)
    expected = num_frames if num_frames else int(3.0 * fps)
    assert len(decoded.indices) == len(decoded.frames) == expected
    assert [frame_index_of(f) for f in decoded.frames] == decoded.indices
    assert decoded.indices == sorted(set(decoded.indices))
    frames, metadata = decoded.vllm_input()
    assert metadata["frames_indices"] == decoded.indices and metadata["total_num_frames"] == 30


def test_fps_sampling_is_capped_at_the_frame_limit(coded_mp4):
    decoded = video.decode(coded_mp4, MediaSettings(max_frames=6), fps=10.0)
    assert len(decoded.indices) == 6
    assert [frame_index_of(f) for f in decoded.frames] == decoded.indices


def test_explicit_frame_count_over_the_limit_is_refused(coded_mp4):
    with pytest.raises(video.InvalidRequest, match="num_frames"):
        video.decode(coded_mp4, MediaSettings(max_frames=6), num_frames=7)


def test_frames_are_resized_to_the_pixel_budget(tmp_path):
    path = write_mp4(
        tmp_path / "wide.mp4", frame_coded_video(4, size=224)[:, :112], fps=4
    )  # 224 wide, 112 high
    decoded = video.decode(path, MediaSettings(max_frame_pixels=56 * 56 * 2), num_frames=2)
    height, width = decoded.frames.shape[1:3]
    assert width * height <= 56 * 56 * 2 and width % 28 == 0 and height % 28 == 0 and width > height


def test_a_video_pixel_budget_shrinks_each_frame_as_the_frames_grow(tmp_path):
    path = write_mp4(tmp_path / "square.mp4", frame_coded_video(16, size=224), fps=4)
    limits = MediaSettings(max_frames=16, max_frame_pixels=224 * 224, max_video_pixels=4 * 224 * 224)
    sizes = {}
    for frames in (2, 4, 8, 16):
        decoded = video.decode(path, limits, num_frames=frames)
        height, width = decoded.frames.shape[1:3]
        assert frames * width * height <= limits.max_video_pixels or width * height == 28 * 28
        sizes[frames] = (width, height)
    # Up to 4 frames the per-frame budget binds; past it the video's: 8 frames of 140^2
    # (4 groups of 25 tokens, where 224^2 would be 4 of 64), 16 frames of 112^2.
    assert sizes == {2: (224, 224), 4: (224, 224), 8: (140, 140), 16: (112, 112)}
    assert video.decode(path, limits, num_frames=16).estimated_tokens == 8 * 4 * 4


@pytest.mark.parametrize("make", ["empty", "text", "truncated", "audio"])
def test_undecodable_files_are_refused(tmp_path, coded_mp4, make):
    path = tmp_path / "bad.mp4"
    if make == "empty":
        path.write_bytes(b"")
    elif make == "text":
        path.write_text("this is not a video\n" * 100)
    elif make == "truncated":
        path.write_bytes(coded_mp4.read_bytes()[:300])
    else:
        path = write_audio_only(tmp_path / "audio.mp4")
    with pytest.raises(video.InvalidMedia):
        video.decode(path, MediaSettings(), num_frames=2)


# ---- keyframe-aware sampling and parallel readers ------------------------------------------
@pytest.fixture(scope="module")
def gop_mp4(tmp_path_factory):
    # 30 frame-coded frames at 10 fps, a keyframe every 6 frames: 0, 6, 12, 18, 24.
    path = tmp_path_factory.mktemp("v") / "gop.mp4"
    return write_mp4(path, frame_coded_video(30), fps=10, lossless=True, gop=6)


def test_the_fixture_has_the_keyframes_it_was_encoded_with(gop_mp4):
    assert video.probe(gop_mp4).keyframes == (0, 6, 12, 18, 24)


@pytest.mark.parametrize("readers", [2, 3, 8])
def test_parallel_readers_decode_exactly_what_one_reader_does(gop_mp4, readers):
    limits = MediaSettings(max_frames=32)
    one = video.decode(gop_mp4, limits, num_frames=12)
    many = video.decode(gop_mp4, limits, num_frames=12, readers=readers)
    assert many.indices == one.indices
    assert [frame_index_of(f) for f in many.frames] == many.indices
    assert (many.frames == one.frames).all()


def test_keyframe_sampling_decodes_keyframes_where_it_can(gop_mp4):
    decoded = video.decode(gop_mp4, MediaSettings(max_frames=32), num_frames=5, sampling="keyframes")
    uniform = video.sample_indices(video.probe(gop_mp4), MediaSettings(max_frames=32), num_frames=5)
    assert uniform == [3, 9, 15, 21, 27]
    assert decoded.indices == [0, 6, 12, 18, 24]  # each within half a GOP of its uniform frame
    assert [frame_index_of(f) for f in decoded.frames] == decoded.indices


@settings(max_examples=200, deadline=None)
@given(
    num_frames=st.integers(1, 400),
    data=st.data(),
)
def test_snapped_and_split_indices_keep_their_invariants(num_frames, data):
    indices = sorted(data.draw(st.sets(st.integers(0, num_frames - 1), min_size=1, max_size=64)))
    keyframes = sorted(data.draw(st.sets(st.integers(0, num_frames - 1), max_size=40)) | {0})
    snapped = video.snap_to_keyframes(indices, keyframes, num_frames)
    assert len(snapped) == len(indices) and snapped == sorted(set(snapped))
    assert all(0 <= i < num_frames for i in snapped)
    assert all(s == i or s in keyframes for s, i in zip(snapped, indices, strict=True))
    readers = data.draw(st.integers(1, 8))
    runs = video.split_at_keyframes(snapped, keyframes, readers)
    assert [i for run in runs for i in run] == snapped and 1 <= len(runs) <= readers
    gops = [{int(np.searchsorted(keyframes, i, side="right")) for i in run} for run in runs]
    assert all(a.isdisjoint(b) for k, a in enumerate(gops) for b in gops[k + 1 :]), "a GOP decoded twice"
