"""Decoding real encoded files with every backend (server/media/decoders/): the frames a
backend says it picks are the frames, at the size asked for, and what it cannot decode is
refused the same way. torchcodec runs where it loads (the GPU image); here its wheel links
CUDA, so its cases are reported as skipped with the reason, never as passed."""

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.media import video
from server.media.decoders import pyav_reader
from server.settings import MediaSettings

from ..media import frame_coded_video, frame_index_of, write_audio_only, write_mp4


def _torchcodec_missing() -> str | None:
    try:
        import torchcodec.decoders  # noqa: F401
    except Exception as exc:  # ModuleNotFoundError, or the OSError of a wheel linking CUDA
        return f"torchcodec does not load here: {type(exc).__name__}: {exc}"[:300]
    return None


@pytest.fixture(params=["decord", "pyav", "torchcodec"])
def decoder(request):
    if request.param == "torchcodec" and (reason := _torchcodec_missing()):
        pytest.skip(reason)
    return request.param


@pytest.fixture(scope="module")
def coded_mp4(tmp_path_factory):
    # 30 frames at 10 fps = 3 s; frame i has grey level 8 * i.
    return write_mp4(tmp_path_factory.mktemp("v") / "coded.mp4", frame_coded_video(30), fps=10, lossless=True)


def test_probe_reads_the_stream(coded_mp4, decoder):
    info = video.probe(coded_mp4, video.get_decoder(decoder))
    assert (info.num_frames, info.fps, info.width, info.height) == (30, 10.0, 112, 112)
    assert info.duration_s == pytest.approx(3.0)


@pytest.mark.parametrize("num_frames, fps", [(4, None), (7, None), (None, 2.0), (None, 5.0)])
def test_decoded_frames_are_the_frames_it_picked(coded_mp4, num_frames, fps, decoder):
    limits = MediaSettings(max_frames=32)
    decoded = video.decode(coded_mp4, limits, num_frames=num_frames, fps=fps, decoder=decoder)
    expected = num_frames if num_frames else int(3.0 * fps)
    assert len(decoded.indices) == len(decoded.frames) == expected
    assert [frame_index_of(f) for f in decoded.frames] == decoded.indices
    assert decoded.indices == sorted(set(decoded.indices))
    frames, metadata = decoded.vllm_input()
    assert metadata["frames_indices"] == decoded.indices and metadata["total_num_frames"] == 30


def test_fps_sampling_is_capped_at_the_frame_limit(coded_mp4, decoder):
    decoded = video.decode(coded_mp4, MediaSettings(max_frames=6), fps=10.0, decoder=decoder)
    assert len(decoded.indices) == 6
    assert [frame_index_of(f) for f in decoded.frames] == decoded.indices


def test_explicit_frame_count_over_the_limit_is_refused(coded_mp4):
    with pytest.raises(video.InvalidRequest, match="num_frames"):
        video.decode(coded_mp4, MediaSettings(max_frames=6), num_frames=7)


def test_frames_are_resized_to_the_pixel_budget(tmp_path, decoder):
    path = write_mp4(
        tmp_path / "wide.mp4", frame_coded_video(4, size=224)[:, :112], fps=4
    )  # 224 wide, 112 high
    limits = MediaSettings(max_frame_pixels=56 * 56 * 2)
    decoded = video.decode(path, limits, num_frames=2, decoder=decoder)
    height, width = decoded.frames.shape[1:3]
    assert width * height <= 56 * 56 * 2 and width % 28 == 0 and height % 28 == 0 and width > height
    assert [frame_index_of(f) for f in decoded.frames] == decoded.indices == [1, 3]


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
def test_undecodable_files_are_refused(tmp_path, coded_mp4, make, decoder):
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
        video.decode(path, MediaSettings(), num_frames=2, decoder=decoder)


# ---- keyframe-aware sampling and parallel readers ------------------------------------------
@pytest.fixture(scope="module")
def gop_mp4(tmp_path_factory):
    # 30 frame-coded frames at 10 fps, a keyframe every 6 frames: 0, 6, 12, 18, 24.
    path = tmp_path_factory.mktemp("v") / "gop.mp4"
    return write_mp4(path, frame_coded_video(30), fps=10, lossless=True, gop=6)


def test_the_fixture_has_the_keyframes_it_was_encoded_with(gop_mp4, decoder):
    assert video.probe(gop_mp4, video.get_decoder(decoder)).keyframes == (0, 6, 12, 18, 24)


@pytest.mark.parametrize("readers", [2, 3, 8])
def test_parallel_readers_decode_exactly_what_one_reader_does(gop_mp4, readers, decoder):
    limits = MediaSettings(max_frames=32)
    one = video.decode(gop_mp4, limits, num_frames=12, decoder=decoder)
    many = video.decode(gop_mp4, limits, num_frames=12, readers=readers, decoder=decoder)
    assert many.indices == one.indices
    assert [frame_index_of(f) for f in many.frames] == many.indices
    assert (many.frames == one.frames).all()


def test_keyframe_sampling_decodes_keyframes_where_it_can(gop_mp4, decoder):
    limits = MediaSettings(max_frames=32)
    decoded = video.decode(gop_mp4, limits, num_frames=5, sampling="keyframes", decoder=decoder)
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


# ---- pyav's forward decoding on a clip with B-frames -----------------------------------------
@pytest.fixture(scope="module")
def moving_mp4(tmp_path_factory):
    """8 s of moving content at 30 fps, a keyframe every 60 frames, libx264's default B-frames
    (so frames that nothing references, which forward decoding drops on its way)."""
    yy, xx = np.mgrid[:112, :224]
    base = np.repeat(((xx // 16 + yy // 16) % 2 * 120 + 40).astype(np.uint8)[:, :, None], 3, axis=2)
    pixels = np.stack([np.roll(base, 3 * i, axis=1) for i in range(240)])
    pixels[:, :, :, 0] = (np.arange(240) * 7 % 256)[:, None, None]
    return write_mp4(tmp_path_factory.mktemp("v") / "moving.mp4", pixels, fps=30, gop=60)


@pytest.mark.parametrize("indices", [[15, 75, 135, 195], [0, 1, 59, 60, 61, 239], [30, 31, 32, 33]])
def test_forward_decoding_gives_a_full_decodes_frames(moving_mp4, indices):
    """Seeking only past keyframes and skipping unreferenced frames changes no pixel: each
    frame equals the same frame of a plain PyAV decode of every frame."""
    backend = video.get_decoder("pyav")
    info = video.probe(moving_mp4, backend)
    assert info.keyframes[:4] == (0, 60, 120, 180)
    with av.open(str(moving_mp4)) as container:
        # AV_PICTURE_TYPE_B == 3 (an int or an IntEnum, by PyAV version)
        assert any(int(f.pict_type) == 3 for f in container.decode(video=0)), "the clip has no B-frames"
    with av.open(str(moving_mp4)) as container:
        every = [
            f.to_ndarray(format="rgb24", width=112, height=56, interpolation=pyav_reader.RESIZE)
            for f in container.decode(video=0)
        ]
    got = backend.read(moving_mp4, info, indices, 112, 56, threads=1)
    assert np.array_equal(got, np.stack([every[i] for i in indices]))


def test_forward_decoding_ends_on_a_wrong_keyframe_list(moving_mp4):
    """Keyframes that are not (off by one here) cost a longer decode, never a loop."""
    backend = video.get_decoder("pyav")
    info = video.probe(moving_mp4, backend)
    wrong = video.VideoInfo(**{**info.__dict__, "keyframes": (0, *(k + 1 for k in info.keyframes[1:]))})
    assert backend.read(moving_mp4, wrong, [75, 135, 200], 112, 56, threads=1).shape == (3, 56, 112, 3)


def test_backends_agree_on_the_frames_of_a_lossy_clip(moving_mp4):
    """decord and pyav, uniform sampling at the server's size: the same source frames, equal
    up to their resizers' rounding (a neighbouring frame differs by about 19 of 255 here)."""
    limits = MediaSettings(max_frames=16, max_frame_pixels=112 * 56)
    one, other = (video.decode(moving_mp4, limits, num_frames=12, decoder=d) for d in ("decord", "pyav"))
    assert one.indices == other.indices and one.frames.shape == other.frames.shape
    difference = np.abs(one.frames.astype(int) - other.frames.astype(int))
    assert difference.mean() < 2.5, difference.mean()


def test_a_decoder_that_cannot_run_stops_the_start_with_its_reason():
    video.check_decoder(MediaSettings(decoder="pyav"))  # decodes its own test clip
    with pytest.raises(ValueError, match="CPU only"):
        MediaSettings(decoder="pyav", decode_device="cuda")
    if _torchcodec_missing():
        with pytest.raises(RuntimeError, match="media.decoder torchcodec on cpu cannot decode"):
            video.check_decoder(MediaSettings(decoder="torchcodec"))
