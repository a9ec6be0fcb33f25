"""decord decoding on real encoded files: the frames it says it picks are the frames."""

import pytest

from server import video
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
