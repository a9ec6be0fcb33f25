"""The upload store: unguessable ids, TTL, nothing left behind."""

import time

import pytest

from server.errors import NotFound
from server.media.store import FileStore


def _upload(store: FileStore, content: bytes = b"video") -> str:
    file_id, partial = store.new_partial()
    partial.write_bytes(content)
    store.commit(file_id, partial, "../../clip.mp4", "user_data", {"frames": 1})
    return file_id


def test_ids_are_random_and_filenames_cannot_escape(tmp_path):
    store = FileStore(tmp_path, ttl_s=60)
    ids = {_upload(store) for _ in range(20)}
    assert len(ids) == 20 and all(len(i) == len("file-") + 32 for i in ids)
    assert {f.filename for f in store.list()} == {"clip.mp4"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{i}.bin" for i in ids] + [f"{i}.json" for i in ids]
    )


class _Clock:
    """Epoch seconds that move only when the test says so."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_expired_files_are_gone_and_purged(tmp_path):
    clock = _Clock()
    store = FileStore(tmp_path, ttl_s=60, clock=clock)
    file_id = _upload(store)
    clock.now += 59
    assert store.get(file_id).id == file_id, "still there within its TTL"
    clock.now += 2
    with pytest.raises(NotFound, match="expired"):
        store.get(file_id)
    other = _upload(store)
    assert store.purge_expired() == 0, "a fresh file is not purged"
    clock.now += 61
    assert store.purge_expired() == 1
    assert not any(tmp_path.iterdir()), f"{other} should have left nothing behind"


@pytest.mark.parametrize("bad", ["../../etc/passwd", "file-XYZ", "file-" + "0" * 31, ""])
def test_malformed_ids_never_touch_the_filesystem(tmp_path, bad):
    store = FileStore(tmp_path, ttl_s=60)
    with pytest.raises(NotFound):
        store.get(bad)
    assert store.delete(bad) is False
